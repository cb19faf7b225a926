//! One error type for the block layer and every format driver.
//!
//! Drivers return it across the [`crate::BlockRead`]/[`crate::BlockWrite`] traits, so it is
//! shared rather than one per driver. Each error has a stable [`ErrorKind`] that tests and
//! scripts can match on, and context (file, offset, field) that tells a user exactly which
//! byte of which file was wrong.

use std::fmt;
use std::path::{Path, PathBuf};

/// What went wrong, stable across releases (also printed in JSON output). New kinds may
/// be added, so matches need a catch-all arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The operating system refused a read, write, open or sync.
    Io,
    /// The file is not of the format it was opened as (bad magic, impossible header).
    InvalidFormat,
    /// A valid file uses a feature diskcast does not implement (an encrypted qcow2), or the
    /// options ask for one. A property of the file or the request.
    Unsupported,
    /// The format has no such operation at all, whatever the file holds: a raw image has
    /// no metadata to `check` (qemu-img check exits 63 for it). A property of the format.
    NotApplicable,
    /// The file is of the right format but its metadata contradicts itself.
    Corrupt,
    /// An offset or size points outside the image or the file.
    OutOfBounds,
    /// A backing or extent file was not allowed by the gate (see [`crate::gate`]).
    Refused,
    /// The user's arguments do not make sense (unknown option, bad size).
    InvalidArgument,
    /// The operation was interrupted (Ctrl-C).
    Cancelled,
    /// The user asked for proof the input is trusted (`--verify-key`) and it has none: no
    /// signature, or none that verifies with the keys given and names what was read.
    Untrusted,
}

impl ErrorKind {
    /// A short lowercase name, used in messages and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Io => "io",
            ErrorKind::InvalidFormat => "invalid-format",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::NotApplicable => "not-applicable",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::OutOfBounds => "out-of-bounds",
            ErrorKind::Refused => "refused",
            ErrorKind::InvalidArgument => "invalid-argument",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Untrusted => "untrusted",
        }
    }
}

/// An error with its kind, a message, and where it happened.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    file: Option<PathBuf>,
    offset: Option<u64>,
    field: Option<&'static str>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// Result with the block layer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with a message that says what is wrong.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), file: None, offset: None, field: None, source: None }
    }
    /// Shorthand for [`ErrorKind::InvalidFormat`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidFormat, message)
    }
    /// Shorthand for [`ErrorKind::Corrupt`].
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Corrupt, message)
    }
    /// Shorthand for [`ErrorKind::Unsupported`].
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }
    /// Shorthand for [`ErrorKind::NotApplicable`].
    pub fn not_applicable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotApplicable, message)
    }
    /// Shorthand for [`ErrorKind::OutOfBounds`].
    pub fn out_of_bounds(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::OutOfBounds, message)
    }
    /// Shorthand for [`ErrorKind::InvalidArgument`].
    pub fn argument(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    /// Shorthand for [`ErrorKind::Refused`].
    pub fn refused(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Refused, message)
    }
    /// An I/O error with a message saying what was being done.
    pub fn io(message: impl Into<String>, source: std::io::Error) -> Self {
        let mut e = Self::new(ErrorKind::Io, message);
        e.source = Some(Box::new(source));
        e
    }
    /// Shorthand for [`ErrorKind::Untrusted`].
    pub fn untrusted(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Untrusted, message)
    }
    /// The operation was cancelled by the user.
    pub fn cancelled() -> Self {
        Self::new(ErrorKind::Cancelled, "interrupted")
    }

    /// Names the file this error is about (kept if already set: the innermost file wins).
    pub fn with_file(mut self, file: impl AsRef<Path>) -> Self {
        if self.file.is_none() {
            self.file = Some(file.as_ref().to_path_buf());
        }
        self
    }
    /// Names the byte offset in the file (or in the guest, as the message says).
    pub fn with_offset(mut self, offset: u64) -> Self {
        if self.offset.is_none() {
            self.offset = Some(offset);
        }
        self
    }
    /// Names the on-disk field that holds the bad value.
    pub fn with_field(mut self, field: &'static str) -> Self {
        if self.field.is_none() {
            self.field = Some(field);
        }
        self
    }
    /// Attaches an underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The stable kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// The message without context.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// The file named in the context, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }
    /// The offset named in the context, if any.
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }
    /// The field named in the context, if any.
    pub fn field(&self) -> Option<&'static str> {
        self.field
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        f.write_str(&self.message)?;
        let mut ctx = Vec::new();
        if let Some(field) = self.field {
            ctx.push(format!("field {field}"));
        }
        if let Some(off) = self.offset {
            ctx.push(format!("offset {off:#x}"));
        }
        if !ctx.is_empty() {
            write!(f, " ({})", ctx.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| -> &(dyn std::error::Error + 'static) { e })
    }
}

/// A layout read past the end of its buffer is a truncated (invalid) file, naming the
/// structure; a value too large for its field is a request the format cannot hold.
impl From<diskcast_layout::LayoutError> for Error {
    fn from(e: diskcast_layout::LayoutError) -> Self {
        match e {
            diskcast_layout::LayoutError::Short { what, .. } => {
                Error::invalid(format!("truncated {e}")).with_field(what)
            }
            diskcast_layout::LayoutError::TooLarge { what, .. } => Error::argument(e.to_string()).with_field(what),
        }
    }
}

/// Adds context to any `Result<T, Error>`.
pub trait ResultExt<T> {
    /// See [`Error::with_file`].
    fn file(self, file: impl AsRef<Path>) -> Result<T>;
    /// See [`Error::with_field`].
    fn field(self, field: &'static str) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn file(self, file: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| e.with_file(file))
    }
    fn field(self, field: &'static str) -> Result<T> {
        self.map_err(|e| e.with_field(field))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_field_and_offset() {
        let e = Error::corrupt("L2 entry points past the end of the file")
            .with_field("l2_entry")
            .with_offset(0x30000)
            .with_file("a.qcow2");
        assert_eq!(e.to_string(), "a.qcow2: L2 entry points past the end of the file (field l2_entry, offset 0x30000)");
        assert_eq!(e.kind(), ErrorKind::Corrupt);
    }

    #[test]
    fn a_short_layout_read_is_a_truncated_file_naming_the_structure() {
        let e = Error::from(diskcast_layout::le32(&[1, 2], 0, "VDI header").unwrap_err());
        assert_eq!(e.kind(), ErrorKind::InvalidFormat);
        assert_eq!(e.field(), Some("VDI header"));
        assert_eq!(
            e.to_string(),
            "truncated VDI header: needs 4 bytes at offset 0, only 2 bytes available (field VDI header)"
        );
    }

    #[test]
    fn innermost_context_wins() {
        let e = Error::invalid("x").with_file("inner").with_file("outer");
        assert_eq!(e.file(), Some(Path::new("inner")));
    }
}
