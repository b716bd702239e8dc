//! Errors of the scst.conf importer. Every error carries the position (line and column)
//! of the construct at fault.

use std::fmt;

use serde::Serialize;

/// A position in scst.conf: 1-based line and 1-based column (in characters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Pos {
    /// 1-based line number.
    pub line: u32,
    /// 1-based column, counted in Unicode scalar values.
    pub column: u32,
}

impl Pos {
    /// A position from 1-based line and column.
    pub const fn new(line: u32, column: u32) -> Pos {
        Pos { line, column }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A file that cannot be imported, with the position of the construct at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Where the problem is.
    pub pos: Pos,
    /// What the problem is.
    pub kind: ErrorKind,
}

impl Error {
    /// An error at `pos`.
    pub fn new(pos: Pos, kind: ErrorKind) -> Error {
        Error { pos, kind }
    }

    /// The 1-based line of the construct at fault.
    pub fn line(&self) -> u32 {
        self.pos.line
    }

    /// The 1-based column of the construct at fault.
    pub fn column(&self) -> u32 {
        self.pos.column
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.pos.line, self.pos.column, self.kind
        )
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.kind)
    }
}

/// Why scst.conf cannot be imported.
///
/// The lexical variants mirror places where scstadmin (`readConfigFile`/`parseStanza`)
/// would silently discard or mangle text: the importer refuses instead, because the
/// configuration SCST ran and the configuration the file shows would differ.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// A word is not valid UTF-8.
    #[error("invalid UTF-8")]
    InvalidUtf8(#[source] std::str::Utf8Error),
    /// A `}` with no open section.
    #[error("'}}' without a matching '{{' (scstadmin stops reading the file here)")]
    UnmatchedClose,
    /// A section opened here is never closed.
    #[error("section opened here is never closed with '}}'")]
    UnclosedBlock,
    /// Text in front of `}` on the same line (scstadmin drops it).
    #[error(
        "text before '}}' on the same line is discarded by scstadmin; put '}}' on a line of its own"
    )]
    TextBeforeClose,
    /// `{` with no section name in front of it (scstadmin drops the section).
    #[error("'{{' without a section name in front of it on the same line")]
    BlockWithoutHeader,
    /// Sections nested deeper than any valid scst.conf.
    #[error("sections nested deeper than {0} levels")]
    TooDeep(usize),
    /// The last line has text but no newline (scstadmin ignores it).
    #[error("the last line has no newline at its end, so scstadmin ignores it; add a newline")]
    NoFinalNewline,
    /// scstadmin deletes the character in front of an unescaped `#`.
    #[error(
        "scstadmin deletes the character {0:?} in front of '#'; put a blank before the comment or write a literal '#' as '\\#'"
    )]
    CommentEatsChar(char),
    /// A line with more than three words (scstadmin ignores the fourth and later ones).
    #[error(
        "unexpected {0:?}: a line holds at most three words (quote values that contain blanks)"
    )]
    TooManyWords(String),
    /// The pre-2.0 `[HANDLER ...]` file format.
    #[error("pre-2.0 scst.conf format ('[{0} ...]' sections); convert it with scstadmin 2.x or later first")]
    OldFormat(String),
    /// A section keyword without its name.
    #[error("{0} needs a name")]
    MissingName(&'static str),
    /// A keyword followed by an extra word.
    #[error("unexpected {word:?} after {keyword} {name}")]
    ExtraWord {
        /// The keyword.
        keyword: &'static str,
        /// Its name.
        name: String,
        /// The extra word.
        word: String,
    },
    /// A keyword used where it has no meaning.
    #[error("{keyword} is not allowed {context}")]
    Misplaced {
        /// The keyword.
        keyword: String,
        /// Where it was found, e.g. "inside HANDLER".
        context: &'static str,
    },
    /// An attribute given two values (scstadmin rejects the attribute).
    #[error("attribute {name} has two values {first:?} and {second:?}; quote a value that contains blanks")]
    TwoValues {
        /// Attribute name.
        name: String,
        /// First value.
        first: String,
        /// Second value.
        second: String,
    },
    /// An attribute followed by a `{ ... }` section.
    #[error("attribute {0} cannot be followed by a section")]
    AttributeWithBlock(String),
    /// A keyword that takes no section was followed by one.
    #[error("{0} takes no section")]
    UnexpectedBlock(&'static str),
    /// A LUN number that is not an integer in SCST's range.
    #[error("LUN number {0:?} is not an integer between 0 and 16383")]
    BadLun(String),
    /// `LUN <n>` without a device name.
    #[error("LUN {0} needs a device name")]
    LunWithoutDevice(String),
    /// The same construct twice.
    #[error("{what} is defined twice (first at line {})", first.line)]
    Duplicate {
        /// What is duplicated, e.g. "DEVICE disk1".
        what: String,
        /// Position of the first definition.
        first: Pos,
    },
    /// A device name SCST rejects.
    #[error("device name {0:?} contains '/' (scstadmin refuses it)")]
    BadDeviceName(String),
    /// An attribute value SCST itself rejects.
    #[error("{attribute} {value:?}: {reason}")]
    BadValue {
        /// Attribute name.
        attribute: String,
        /// The value as written.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A required attribute is missing.
    #[error("{attribute} is missing: {reason}")]
    MissingAttribute {
        /// Attribute name.
        attribute: &'static str,
        /// Why it is required.
        reason: String,
    },
    /// A construct that contradicts another one.
    #[error("{0}")]
    Conflict(String),
    /// The generated configuration fails rustio-config's validation (an importer bug).
    #[error("internal error, please report: the generated configuration is invalid:\n{0}")]
    InvalidOutput(String),
}
