//! Text log lines that a client cannot forge.
//!
//! Client ids, usernames, topics and filters are the client's own bytes, and they reach
//! log lines as span and event fields. With the `tracing-subscriber` default field
//! formatter a value logged with `%` (Display) is written as it is, so a client id
//! holding `\n` starts a line of the client's choosing, and one holding `\x1b[` drives
//! the operator's terminal. [`EscapedFields`] formats fields exactly as the default
//! does (`message key=value key="str"`), except that every control character in a
//! value is written as a `\u{..}` escape: one event is always one line, whatever a
//! field holds, and whichever call site forgot to use `?`. JSON logs need none of this
//! (their encoder escapes strings).

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// The text formatter's field formatter: the default layout with control characters
/// escaped (see the [module docs](self)).
#[derive(Debug, Default, Clone, Copy)]
pub struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = Visitor {
            out: Escaping(writer),
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes through to the line, escaping control characters.
struct Escaping<'w>(Writer<'w>);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(at) = rest.find(char::is_control) {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

struct Visitor<'w> {
    out: Escaping<'w>,
    first: bool,
    result: fmt::Result,
}

impl Visitor<'_> {
    fn field(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_err() {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        // `r#type` in a macro call is the field `type`; the default formatter shows it so.
        let name = field.name().trim_start_matches("r#");
        self.result = match name {
            "message" => write!(self.out, "{separator}{value}"),
            name => write!(self.out, "{separator}{name}={value}"),
        };
    }
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.field(field, format_args!("{value}"));
        } else {
            self.field(field, format_args!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, format_args!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    fn logged(f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(buf.clone())
            .with_ansi(false)
            .without_time()
            .fmt_fields(EscapedFields)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn a_client_string_cannot_start_a_line() {
        let evil = "x\nERROR forged: admin logged in\x1b[2J";
        let out = logged(|| {
            let span = tracing::info_span!("connection", client_id = %evil);
            let _in = span.enter();
            tracing::warn!(topic = %evil, filter = ?evil, "closing {}", evil);
        });
        assert_eq!(out.lines().count(), 1, "one event, one line: {out:?}");
        assert!(!out.contains('\x1b'), "{out:?}");
        assert!(
            out.contains(r"client_id=x\nERROR forged: admin logged in\u{1b}[2J"),
            "{out:?}"
        );
        assert!(
            out.contains(r"closing x\nERROR forged: admin logged in\u{1b}[2J topic=x\nERROR"),
            "{out:?}"
        );
    }

    #[test]
    fn ordinary_fields_read_as_with_the_default_formatter() {
        let out = logged(|| {
            let addr: std::net::SocketAddr = "127.0.0.1:1883".parse().unwrap();
            tracing::info!(listener = "default", %addr, n = 3, ok = true, "listening");
        });
        assert!(
            out.ends_with("listening listener=\"default\" addr=127.0.0.1:1883 n=3 ok=true\n"),
            "{out:?}"
        );
    }
}
