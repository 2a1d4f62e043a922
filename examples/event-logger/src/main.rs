//! `tandem-event-logger`: aMQTT's `EventLoggerPlugin` and `PacketLoggerPlugin` as a sidecar and
//! a log-pipeline source. Every event it subscribes to becomes one JSON line with a stable schema
//! (see `README.md` and [`schema`]) on stdout, or appended to `--output FILE` with size-based
//! rotation ([`sink`]). Events resent after a reconnect are skipped by sequence.
//!
//! # Layout
//! - `options.rs`: the command line.
//! - `schema.rs`: an SDK event to its JSON line.
//! - `sink.rs`: stdout, or a file rotated by size.

mod options;
mod schema;
mod sink;

use std::sync::Mutex;

use tandem_plugin::{Context, Event, EventHandler, EventSubscription, HandlerError, Plugin};

use crate::schema::PayloadMode;
use crate::sink::{RotatingFile, Sink};

struct Logger {
    state: Mutex<State>,
    payloads: PayloadMode,
}

struct State {
    sink: Sink,
    /// The broker instance the sequences below belong to (they restart at 1 with a new one).
    instance: String,
    /// Highest sequence written for `instance`.
    last: u64,
}

impl EventHandler for Logger {
    async fn on_event(&self, ctx: &Context, event: Event) -> Result<(), HandlerError> {
        let mut state = self.state.lock().expect("logger lock");
        if state.instance != ctx.broker_instance_id() {
            state.instance = ctx.broker_instance_id().to_owned();
            state.last = 0;
        }
        if event.sequence <= state.last {
            return Ok(()); // resent after a reconnect: already written
        }
        let mut line = schema::line(&event, ctx.broker_instance_id(), self.payloads).to_string();
        line.push('\n');
        state.sink.write_line(line.as_bytes())?;
        state.last = event.sequence;
        Ok(())
    }
}

fn main() -> Result<(), tandem_plugin::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = options::parse(&args).unwrap_or_else(|e| {
        eprintln!("tandem-event-logger: {e}\n{}", options::USAGE);
        std::process::exit(2);
    });
    let sink = match &options.output {
        None => Sink::Stdout(std::io::stdout()),
        Some(path) => match RotatingFile::open(path, options.rotation) {
            Ok(file) => Sink::File(file),
            Err(e) => {
                eprintln!(
                    "tandem-event-logger: cannot open --output {}: {e}",
                    path.display()
                );
                std::process::exit(2);
            }
        },
    };
    let mut subscription = EventSubscription::new(options.kinds);
    if options.payload != PayloadMode::None {
        subscription = subscription.with_payloads();
    }
    if options.raw_packets {
        subscription = subscription.with_raw_packets();
    }
    let logger = Logger {
        state: Mutex::new(State {
            sink,
            instance: String::new(),
            last: 0,
        }),
        payloads: options.payload,
    };
    Plugin::new("tandem-event-logger", env!("CARGO_PKG_VERSION"))
        .events(subscription, logger)
        .run()
}
