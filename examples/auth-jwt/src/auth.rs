//! The authenticate role: the MQTT password carries the token.

use tandem_plugin::{AuthDecision, AuthRequest, Authenticator, Context, HandlerError};
use tracing::info;

use crate::config::{Config, NonJwt};
use crate::jwt::Jwt;
use crate::{claims, verify};

/// CONNACK reason for a refused token (MQTT 5 "bad user name or password").
const BAD_CREDENTIALS: u8 = 0x86;

impl Authenticator for Jwt {
    async fn authenticate(
        &self,
        ctx: &Context,
        req: AuthRequest,
    ) -> Result<AuthDecision, HandlerError> {
        let config = ctx.config::<Config>()?;
        // No password: not a token client; other plugins of the chain may know it.
        if req.password.is_none() {
            return Ok(AuthDecision::abstain());
        }
        let Some(token) = req.password_str().filter(|p| verify::looks_like_jwt(p)) else {
            return Ok(match config.non_jwt_password {
                NonJwt::Abstain => AuthDecision::abstain(),
                NonJwt::Deny => refuse(&req, "malformed token: the password is not a JWT".into()),
            });
        };
        let claims = match verify::verify(token, &config).await {
            Ok(claims) => claims,
            Err(rejected) => return Ok(refuse(&req, rejected.to_string())),
        };
        Ok(match claims::decide(&config, &req, &claims) {
            Ok(decision) => decision,
            Err(reason) => refuse(&req, reason),
        })
    }
}

fn refuse(req: &AuthRequest, reason: String) -> AuthDecision {
    info!(client_id = %req.client_id, username = %req.username.as_deref().unwrap_or(""), %reason, "token refused");
    AuthDecision::deny(reason).with_reason_code(BAD_CREDENTIALS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::tests::{hs_token, now};
    use serde_json::json;
    use tandem_plugin::Plugin;
    use tandem_plugin::Verdict;
    use tandem_plugin::testing::TestBroker;

    #[tokio::test]
    async fn verdicts_through_the_sdk() {
        let broker = TestBroker::new(
            Plugin::new("jwt", "test")
                .config::<Config>()
                .authenticate(Jwt),
        );
        broker
            .describe(json!({"algorithms": ["HS256"], "secret": "s3cret", "attributes": {"tenant": "tenant"}}))
            .await
            .unwrap();
        let token = hs_token(json!({"sub": "d1", "tenant": "acme", "exp": now() + 60}));
        let d = broker
            .authenticate(
                AuthRequest::new("c1")
                    .with_username("x")
                    .with_password(token),
            )
            .await
            .unwrap();
        assert_eq!(d.verdict, Verdict::Allow);
        assert_eq!(d.attributes["tenant"], "acme");

        let d = broker
            .authenticate(AuthRequest::new("c2").with_username("x"))
            .await
            .unwrap();
        assert_eq!(d.verdict, Verdict::Abstain, "no password: no opinion");

        let d = broker
            .authenticate(AuthRequest::new("c3").with_password("hunter2"))
            .await
            .unwrap();
        assert_eq!(d.verdict, Verdict::Deny);
        assert_eq!(d.reason_code, Some(0x86));

        let expired = hs_token(json!({"sub": "d1", "exp": now() - 120}));
        let d = broker
            .authenticate(AuthRequest::new("c4").with_password(expired))
            .await
            .unwrap();
        assert_eq!(
            (d.verdict, d.reason.as_str()),
            (Verdict::Deny, "token expired")
        );

        // A broken configuration is refused at Describe, and the previous one stays.
        let err = broker
            .describe(json!({"algorithms": ["HS256"], "secret_file": "/nonexistent/key"}))
            .await
            .unwrap_err();
        assert!(
            err.message()
                .contains("secret_file /nonexistent/key: cannot read"),
            "{err:?}"
        );

        broker
            .describe(
                json!({"algorithms": ["HS256"], "secret": "s3cret", "non_jwt_password": "abstain"}),
            )
            .await
            .unwrap();
        let d = broker
            .authenticate(AuthRequest::new("c5").with_password("hunter2"))
            .await
            .unwrap();
        assert_eq!(d.verdict, Verdict::Abstain);
    }
}
