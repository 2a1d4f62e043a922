//! Where lines go: stdout, or a file rotated by size.
//!
//! Rotation happens between lines only, so a line is never split across files: before a line that
//! would take the file past `max_size`, `FILE.{n-1}` becomes `FILE.{n}` (the oldest, `FILE.{max}`,
//! is replaced), ..., `FILE` becomes `FILE.1`, and a new `FILE` is started. A line longer than
//! `max_size` gets a file of its own. Each line is written with one `write_all` and flushed before
//! the event counts as handled (and so before the broker gets its ack).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The output of the logger.
pub(crate) enum Sink {
    /// Standard output.
    Stdout(io::Stdout),
    /// A file, rotated when `rotation` is set.
    File(RotatingFile),
}

impl Sink {
    /// Writes one whole line (ending with `\n`) and flushes it.
    pub(crate) fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stdout(out) => {
                let mut out = out.lock();
                out.write_all(line)?;
                out.flush()
            }
            Sink::File(file) => file.write_line(line),
        }
    }
}

/// When to rotate and how many rotated files to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rotation {
    /// Rotate before a line would take the file past this many bytes.
    pub(crate) max_size: u64,
    /// Keep `FILE.1` (newest) to `FILE.{max_files}` (oldest); older ones are deleted.
    pub(crate) max_files: u32,
}

/// An append-only file with size-based rotation.
pub(crate) struct RotatingFile {
    path: PathBuf,
    file: File,
    /// Bytes in the current file (its size when opened, plus what we wrote).
    size: u64,
    rotation: Option<Rotation>,
}

impl RotatingFile {
    /// Opens `path` for appending (creating it), continuing an existing file.
    pub(crate) fn open(path: &Path, rotation: Option<Rotation>) -> io::Result<Self> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_owned(),
            file,
            size,
            rotation,
        })
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        if let Some(rotation) = self.rotation
            && self.size > 0
            && self.size + line.len() as u64 > rotation.max_size
        {
            self.rotate(rotation.max_files)?;
        }
        self.file.write_all(line)?;
        self.file.flush()?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self, max_files: u32) -> io::Result<()> {
        for n in (1..max_files).rev() {
            match std::fs::rename(numbered(&self.path, n), numbered(&self.path, n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, numbered(&self.path, 1))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// `FILE` -> `FILE.n`.
pub(crate) fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn rotates_between_lines_and_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let rotation = Rotation {
            max_size: 10,
            max_files: 2,
        };
        let mut file = RotatingFile::open(&path, Some(rotation)).unwrap();
        // 4 bytes each: two fit in 10 bytes, the third starts a new file.
        for line in [
            "a01\n", "a02\n", "a03\n", "a04\n", "a05\n", "a06\n", "a07\n",
        ] {
            file.write_line(line.as_bytes()).unwrap();
        }
        assert_eq!(read(&path), "a07\n");
        assert_eq!(read(&numbered(&path, 1)), "a05\na06\n");
        assert_eq!(read(&numbered(&path, 2)), "a03\na04\n");
        assert!(
            !numbered(&path, 3).exists(),
            "only max_files rotated files are kept"
        );
    }

    #[test]
    fn a_long_line_gets_a_file_of_its_own_and_is_not_split() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        let rotation = Rotation {
            max_size: 4,
            max_files: 5,
        };
        let mut file = RotatingFile::open(&path, Some(rotation)).unwrap();
        file.write_line(b"x\n").unwrap();
        file.write_line(b"a-long-line\n").unwrap();
        file.write_line(b"y\n").unwrap();
        assert_eq!(read(&numbered(&path, 2)), "x\n");
        assert_eq!(read(&numbered(&path, 1)), "a-long-line\n");
        assert_eq!(read(&path), "y\n");
    }

    #[test]
    fn reopening_continues_the_file_and_counts_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        std::fs::write(&path, "old-line\n").unwrap();
        let rotation = Rotation {
            max_size: 12,
            max_files: 1,
        };
        let mut file = RotatingFile::open(&path, Some(rotation)).unwrap();
        file.write_line(b"new\n").unwrap();
        assert_eq!(read(&numbered(&path, 1)), "old-line\n");
        assert_eq!(read(&path), "new\n");
    }

    #[test]
    fn without_rotation_the_file_only_grows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        let mut file = RotatingFile::open(&path, None).unwrap();
        for _ in 0..100 {
            file.write_line(b"0123456789\n").unwrap();
        }
        assert_eq!(read(&path).len(), 1100);
        assert!(!numbered(&path, 1).exists());
    }
}
