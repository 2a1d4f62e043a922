//! `tandem-event-logger`: aMQTT's `EventLoggerPlugin` as a sidecar. Every event it
//! subscribes to becomes one JSON line (`sequence`, `timestamp`, `kind`, `client_id`,
//! `username`, `detail`) on stdout, or appended to `--output FILE`, ready for a log
//! pipeline. Duplicates resent after a reconnect are skipped by sequence.
//!
//! `--kinds all` (default: every kind but the two packet kinds) or a comma list such as
//! `client_connected,client_disconnected`.

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tandem_plugin::serde_json::json;
use tandem_plugin::{
    Context, Event, EventHandler, EventKind, EventSubscription, HandlerError, Plugin,
};

struct Logger {
    out: Mutex<Box<dyn Write + Send>>,
    /// Highest sequence written, and the broker instance it belongs to.
    last: AtomicU64,
    instance: Mutex<String>,
}

impl EventHandler for Logger {
    async fn on_event(&self, ctx: &Context, event: Event) -> Result<(), HandlerError> {
        {
            let mut instance = self.instance.lock().expect("lock");
            if *instance != ctx.broker_instance_id() {
                *instance = ctx.broker_instance_id().to_owned();
                self.last.store(0, Ordering::SeqCst);
            }
        }
        if event.sequence <= self.last.load(Ordering::SeqCst) {
            return Ok(()); // resent after a reconnect: already written
        }
        let kind = format!("{:?}", event.data.kind());
        let line = json!({
            "sequence": event.sequence,
            "timestamp": event
                .timestamp
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default(),
            "kind": snake(&kind),
            "client_id": event.client.as_ref().map(|c| c.client_id.clone()),
            "username": event.client.as_ref().and_then(|c| c.username.clone()),
            "detail": format!("{:?}", event.data),
        });
        // One write per line: a line is never split, even if the process is killed.
        let mut text = line.to_string();
        text.push('\n');
        let mut out = self.out.lock().expect("lock");
        out.write_all(text.as_bytes())?;
        out.flush()?;
        self.last.store(event.sequence, Ordering::SeqCst);
        Ok(())
    }
}

/// `ClientConnected` -> `client_connected`.
fn snake(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                s.push('_');
            }
            s.extend(c.to_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), tandem_plugin::Error> {
    let kinds: Vec<EventKind> = match arg("--kinds").as_deref() {
        None => EventKind::ALL
            .into_iter()
            .filter(|k| !matches!(k, EventKind::MqttPacketReceived | EventKind::MqttPacketSent))
            .collect(),
        Some("all") => EventKind::ALL.to_vec(),
        Some(list) => EventKind::ALL
            .into_iter()
            .filter(|k| {
                list.split(',')
                    .any(|w| w.trim() == snake(&format!("{k:?}")))
            })
            .collect(),
    };
    let out: Box<dyn Write + Send> = match arg("--output") {
        Some(path) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("tandem-event-logger: cannot open --output {path}: {e}");
                std::process::exit(2);
            }
        },
        None => Box::new(std::io::stdout()),
    };
    let logger = Logger {
        out: Mutex::new(out),
        last: AtomicU64::new(0),
        instance: Mutex::new(String::new()),
    };
    Plugin::new("tandem-event-logger", env!("CARGO_PKG_VERSION"))
        .events(EventSubscription::new(kinds), logger)
        .run()
}
