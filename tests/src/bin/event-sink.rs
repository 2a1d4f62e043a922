//! `tandem-event-sink`: the lightest event consumer, for benchmarks. It asks for the
//! event kinds given by `--kinds` (default `message_received`), counts what arrives and
//! does nothing else, so a benchmark measures what the broker spends on events rather than
//! what a plugin spends on handling them. On exit it prints the count to stderr.
//!
//! `tandem-event-sink --listen unix:///tmp/sink.sock --kinds message_received`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tandem_plugin::{
    Context, Event, EventHandler, EventKind, EventSubscription, HandlerError, Plugin,
};

struct Sink(Arc<AtomicU64>);

impl EventHandler for Sink {
    async fn on_event(&self, _ctx: &Context, _event: Event) -> Result<(), HandlerError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn main() -> Result<(), tandem_plugin::Error> {
    let args: Vec<String> = std::env::args().collect();
    let kinds = args
        .iter()
        .position(|a| a == "--kinds")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
        .unwrap_or("message_received");
    let kinds: Vec<EventKind> = kinds
        .split(',')
        .map(|k| k.trim().parse::<EventKind>())
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| {
            eprintln!("tandem-event-sink: --kinds: {e}");
            std::process::exit(2)
        });
    let count = Arc::new(AtomicU64::new(0));
    let result = Plugin::new("tandem-event-sink", env!("CARGO_PKG_VERSION"))
        .events(EventSubscription::new(kinds), Sink(count.clone()))
        .run();
    eprintln!("events received: {}", count.load(Ordering::Relaxed));
    result
}
