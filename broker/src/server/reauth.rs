//! MQTT 5 re-authentication (section 4.12.1): a connected client that authenticated
//! with a method sends AUTH 0x19 with that method; the auth chain in force leads the
//! exchange as it does on CONNECT (challenges go out as AUTH 0x18, answers come back
//! as AUTH 0x18), and it ends with AUTH 0x00 or a DISCONNECT that closes the
//! connection. The connection keeps serving its other packets meanwhile.
//!
//! Re-authentication confirms who the client is: one that proves another identity than
//! the one its session belongs to is disconnected (0x87), and the session attributes of
//! the CONNECT stay.

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{info, warn};

use crate::plugins::login::{Challenge, Grant, Login, Refusal, Step};
use crate::protocol::{self, Auth, ConnectReason, Packet, Properties};
use crate::server::connection::Connection;
use crate::server::exit::Exit;

impl<R, W> Connection<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// The client's AUTH: starts a re-authentication (0x19) or answers the broker's
    /// challenge (0x18). Anything else, another method, or a client that connected
    /// without one, is a protocol error (MQTT-3.15.2-1, MQTT-4.12.0-7).
    pub(super) async fn on_auth(&mut self, auth: Auth) -> Result<(), Exit> {
        let props = auth.properties.as_deref();
        let method = props.and_then(|p| p.authentication_method.as_ref());
        if self.auth_method.is_none() || method != self.auth_method.as_ref() {
            return Err(Exit::Protocol(protocol::Error::Protocol(
                "AUTH without the authentication method of the CONNECT",
            )));
        }
        let (login, step) = match (auth.reason, self.reauth.take()) {
            (Auth::REAUTHENTICATE, None) => {
                let mut login = Login::reauthenticate(&self.plugins, props);
                let step = login.start().await;
                (login, step)
            }
            (Auth::CONTINUE, Some(mut login)) => {
                let step = login.answer(props).await;
                (login, step)
            }
            _ => {
                return Err(Exit::Protocol(protocol::Error::Protocol(
                    "AUTH out of order: 0x19 starts a re-authentication, 0x18 answers the server",
                )));
            }
        };
        match step {
            Step::Challenge(challenge) => {
                self.send_auth(Auth::CONTINUE, challenge_properties(challenge));
                self.reauth = Some(login);
            }
            Step::Refused(refusal) => {
                info!(code = refusal.code as u8, "re-authentication denied");
                return Err(Exit::Refused(refusal));
            }
            Step::Allowed(verified) => {
                let client = self.plugins.client();
                let proved = verified
                    .identity
                    .as_deref()
                    .unwrap_or(client.connect_username());
                if proved != client.identity() {
                    warn!(identity = ?client.identity(), proved = ?proved,
                        "re-authentication denied: it proved another identity than the session's");
                    self.broker.stats.auth_denied();
                    return Err(Exit::Refused(Refusal {
                        code: ConnectReason::NotAuthorized,
                        reason: None,
                    }));
                }
                info!("re-authenticated");
                self.send_auth(Auth::SUCCESS, grant_properties(verified.grant));
            }
        }
        Ok(())
    }

    fn send_auth(&mut self, reason: u8, properties: Properties) {
        self.out.packet(&Packet::Auth(Auth {
            reason,
            properties: Some(Box::new(properties)),
        }));
    }
}

fn challenge_properties(c: Challenge) -> Properties {
    Properties {
        authentication_method: Some(c.method),
        authentication_data: Some(c.data),
        user_properties: c.user_properties,
        ..Properties::default()
    }
}

fn grant_properties(g: Grant) -> Properties {
    Properties {
        authentication_method: g.auth_method,
        authentication_data: g.auth_data,
        user_properties: g.user_properties,
        ..Properties::default()
    }
}
