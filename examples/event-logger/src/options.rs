//! The command line. Flags this program does not know (`--listen`, `--tls-*`) are left to the
//! SDK, which reads them itself.

use std::path::PathBuf;

use tandem_plugin::EventKind;

use crate::schema::PayloadMode;
use crate::sink::Rotation;

/// What the logger was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Options {
    /// The kinds to subscribe to.
    pub(crate) kinds: Vec<EventKind>,
    /// `--output FILE`; stdout when absent.
    pub(crate) output: Option<PathBuf>,
    /// `--max-size` and `--max-files`; only with `--output`.
    pub(crate) rotation: Option<Rotation>,
    /// `--payload utf8|base64|none`.
    pub(crate) payload: PayloadMode,
    /// `--raw-packets`: packet events carry the raw bytes (base64).
    pub(crate) raw_packets: bool,
}

pub(crate) const USAGE: &str = "usage: tandem-event-logger [--kinds all|KIND,...] [--output FILE [--max-size SIZE] [--max-files N]] [--payload utf8|base64|none] [--raw-packets] [--listen ADDR]";

const DEFAULT_MAX_FILES: u32 = 5;

/// Parses the arguments (without the program name).
pub(crate) fn parse(args: &[String]) -> Result<Options, String> {
    let value = |flag: &str| -> Result<Option<&String>, String> {
        match args.iter().rposition(|a| a == flag) {
            None => Ok(None),
            Some(i) => args
                .get(i + 1)
                .map(Some)
                .ok_or_else(|| format!("{flag} needs a value")),
        }
    };
    let kinds = match value("--kinds")?.map(String::as_str) {
        None => EventKind::ALL
            .into_iter()
            .filter(|k| !matches!(k, EventKind::MqttPacketReceived | EventKind::MqttPacketSent))
            .collect(),
        Some("all") => EventKind::ALL.to_vec(),
        Some(list) => list
            .split(',')
            .map(|word| {
                word.trim()
                    .parse::<EventKind>()
                    .map_err(|e| format!("--kinds: {e} (or all)"))
            })
            .collect::<Result<_, _>>()?,
    };
    let output = value("--output")?.map(PathBuf::from);
    let max_size = value("--max-size")?.map(|s| parse_size(s)).transpose()?;
    let max_files = value("--max-files")?
        .map(|s| match s.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(format!(
                "--max-files: `{s}` is not a whole number of at least 1"
            )),
        })
        .transpose()?;
    let rotation = match (max_size, max_files) {
        (Some(max_size), files) => Some(Rotation {
            max_size,
            max_files: files.unwrap_or(DEFAULT_MAX_FILES),
        }),
        (None, Some(_)) => return Err("--max-files needs --max-size".into()),
        (None, None) => None,
    };
    if rotation.is_some() && output.is_none() {
        return Err("--max-size rotates a file: it needs --output FILE".into());
    }
    let payload = match value("--payload")?.map(String::as_str) {
        None | Some("none") => PayloadMode::None,
        Some("utf8") => PayloadMode::Utf8,
        Some("base64") => PayloadMode::Base64,
        Some(other) => return Err(format!("--payload: `{other}` is not utf8, base64 or none")),
    };
    Ok(Options {
        kinds,
        output,
        rotation,
        payload,
        raw_packets: args.iter().any(|a| a == "--raw-packets"),
    })
}

/// `10MiB`, `512KiB`, `1GiB`, `4096`, `64kB`, `5MB`.
fn parse_size(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => {
            return Err(format!(
                "--max-size: unknown unit in `{text}`; use B, KiB, MiB, GiB, kB, MB or GB"
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("--max-size: `{text}` is not a size above zero, such as 10MiB"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn defaults_leave_out_packet_events_and_payloads() {
        let o = parse(&args("--listen unix:///x.sock")).unwrap();
        assert_eq!(o.kinds.len(), EventKind::ALL.len() - 2);
        assert_eq!(
            (o.output, o.rotation, o.payload),
            (None, None, PayloadMode::None)
        );
    }

    #[test]
    fn rotation_and_kinds() {
        let o = parse(&args(
            "--kinds client_connected,message_received --output f --max-size 10MiB --payload utf8",
        ))
        .unwrap();
        assert_eq!(
            o.kinds,
            [EventKind::ClientConnected, EventKind::MessageReceived]
        );
        assert_eq!(
            o.rotation,
            Some(Rotation {
                max_size: 10 << 20,
                max_files: 5
            })
        );
        assert_eq!(o.payload, PayloadMode::Utf8);
        assert_eq!(parse_size("2kB"), Ok(2000));
        assert_eq!(parse_size("300"), Ok(300));
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        let err = |line: &str| parse(&args(line)).unwrap_err();
        assert!(err("--kinds client_conected").contains("unknown event kind \"client_conected\""));
        assert!(err("--max-size 10MiB").contains("needs --output"));
        assert!(err("--output f --max-size 10XB").contains("unknown unit"));
        assert!(err("--output f --max-size 0").contains("above zero"));
        assert!(err("--output f --max-size 1 --max-files 0").contains("--max-files"));
        assert!(err("--output f --max-files 3").contains("needs --max-size"));
        assert!(err("--payload hex").contains("--payload"));
        assert!(err("--output").contains("needs a value"));
    }
}
