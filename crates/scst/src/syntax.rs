//! Lexical layer: scst.conf bytes → a tree of [`Entry`]s, read the way scstadmin reads
//! the file (`readConfigFile`, `parseStanza` and `parseLine` in
//! `scstadmin.sysfs/scstadmin`):
//!
//! 1. Per line: a line starting with `#` is blank; elsewhere the first unescaped `#` starts
//!    a comment, and scstadmin also deletes the character in front of it
//!    (`s/[^\\]\#.*//`, documented in scst.conf(5)).
//! 2. Per line: every backslash escape `\x` becomes `x` (`s/\\(.)/$1/g`), before words are
//!    split; quotes therefore cannot protect a `#`, `{` or `}`.
//! 3. Over the whole text: `{` opens a section named by the text in front of it on the
//!    same line, `}` closes one, a newline ends an entry.
//! 4. Per entry: words are `"..."` (backslash pairs kept verbatim inside) or runs of
//!    non-blanks.
//!
//! Where scstadmin would silently drop or mangle text (text in front of `}`, a last line
//! without newline, a non-blank eaten by a comment, a fourth word, an unmatched `}`), the
//! importer stops with an [`Error`] pointing at it instead.

use crate::error::{Error, ErrorKind, Pos};

/// Deepest nesting accepted. Valid files nest four levels
/// (`TARGET_DRIVER` → `TARGET` → `GROUP` → `LUN`); the limit bounds recursion later on.
pub const MAX_DEPTH: usize = 8;

/// A word of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// The text, escapes removed and quotes stripped.
    pub text: String,
    /// Where the word starts (the opening quote for quoted words).
    pub pos: Pos,
    /// Whether it was written in double quotes.
    pub quoted: bool,
}

/// One entry: a line of one to three words, optionally followed by a `{ ... }` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The words (one to three).
    pub words: Vec<Word>,
    /// The section that follows, if any.
    pub block: Option<Block>,
}

impl Entry {
    /// Position of the first word.
    pub fn pos(&self) -> Pos {
        self.words.first().map(|w| w.pos).unwrap_or_default()
    }
}

/// A `{ ... }` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Position of `{`.
    pub open: Pos,
    /// The entries inside.
    pub entries: Vec<Entry>,
}

/// One byte of the preprocessed text with its original position.
#[derive(Debug, Clone, Copy)]
struct Ch {
    byte: u8,
    pos: Pos,
}

/// Perl's `\s` without Unicode rules: space, \t, \n, \r, \f, \v.
fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Columns (1-based, in characters) of every byte of `line`.
fn columns(line: &[u8]) -> Vec<u32> {
    let mut out = Vec::with_capacity(line.len() + 1);
    let mut col: u32 = 0;
    for &b in line {
        // A UTF-8 continuation byte belongs to the character before it.
        if b & 0xC0 != 0x80 {
            col = col.saturating_add(1);
        }
        out.push(col.max(1));
    }
    out.push(col.saturating_add(1));
    out
}

/// scstadmin's detection of the pre-2.0 format: `/\[(.*)\s+.*\]/` with `$1` one of
/// `HANDLER`, `GROUP`, `ASSIGNMENT`.
fn old_format_section(line: &[u8]) -> Option<String> {
    let open = line.iter().position(|&b| b == b'[')?;
    let close = line.iter().rposition(|&b| b == b']')?;
    if close <= open {
        return None;
    }
    let inner = &line[open + 1..close];
    let last_blank = inner.iter().rposition(|&b| is_blank(b))?;
    let name = &inner[..last_blank];
    match name {
        b"HANDLER" | b"GROUP" | b"ASSIGNMENT" => Some(String::from_utf8_lossy(name).into_owned()),
        _ => None,
    }
}

/// Applies scstadmin's per-line processing and returns the surviving bytes.
fn preprocess(input: &[u8]) -> Result<Vec<Ch>, Error> {
    let mut out = Vec::with_capacity(input.len());
    let mut start = 0usize;
    let mut line_no = 0usize;
    while start < input.len() {
        line_no += 1;
        let (line, has_newline) = match input[start..].iter().position(|&b| b == b'\n') {
            Some(i) => (&input[start..start + i], true),
            None => (&input[start..], false),
        };
        start += line.len() + usize::from(has_newline);
        let line_u32 = to_u32(line_no);
        let cols = columns(line);
        let pos_of = |i: usize| Pos::new(line_u32, cols.get(i).copied().unwrap_or(u32::MAX));

        // Comments: `s/^\#.*//`, then `s/[^\\]\#.*//` (first match only).
        let mut content = line;
        if content.first() == Some(&b'#') {
            content = &content[..0];
        } else if let Some(p) = content
            .windows(2)
            .position(|w| w[0] != b'\\' && w[1] == b'#')
        {
            let eaten = content[p];
            if !is_blank(eaten) {
                let ch = std::str::from_utf8(&content[p..])
                    .ok()
                    .and_then(|s| s.chars().next())
                    .unwrap_or(char::from(eaten));
                return Err(Error::new(pos_of(p), ErrorKind::CommentEatsChar(ch)));
            }
            content = &content[..p];
        }
        if let Some(section) = old_format_section(content) {
            return Err(Error::new(pos_of(0), ErrorKind::OldFormat(section)));
        }

        // Escapes: `s/\\(.)/$1/g` (`.` never matches the newline, which is not here).
        let mut i = 0;
        while i < content.len() {
            if content[i] == b'\\' && i + 1 < content.len() {
                out.push(Ch {
                    byte: content[i + 1],
                    pos: pos_of(i + 1),
                });
                i += 2;
            } else {
                out.push(Ch {
                    byte: content[i],
                    pos: pos_of(i),
                });
                i += 1;
            }
        }
        if has_newline {
            out.push(Ch {
                byte: b'\n',
                pos: pos_of(line.len()),
            });
        }
    }
    Ok(out)
}

fn word(chars: &[Ch], quoted: bool, pos: Pos) -> Result<Word, Error> {
    let bytes: Vec<u8> = chars.iter().map(|c| c.byte).collect();
    let text = String::from_utf8(bytes)
        .map_err(|e| Error::new(pos, ErrorKind::InvalidUtf8(e.utf8_error())))?;
    Ok(Word { text, pos, quoted })
}

/// Splits an entry into words like scstadmin's
/// `m/"([^"\\]*(\\.[^"\\]*)*)"|([^\s]+)/g`.
fn split_words(line: &[Ch]) -> Result<Vec<Word>, Error> {
    let mut words = Vec::new();
    let n = line.len();
    let mut i = 0;
    while i < n {
        if is_blank(line[i].byte) {
            i += 1;
            continue;
        }
        if words.len() == 3 {
            // A fourth word: scstadmin ignores it and everything after it.
            let rest: Vec<u8> = line[i..].iter().map(|c| c.byte).collect();
            let rest = String::from_utf8_lossy(&rest).trim_end().to_owned();
            return Err(Error::new(line[i].pos, ErrorKind::TooManyWords(rest)));
        }
        if line[i].byte == b'"' {
            // The quoted alternative: a backslash keeps the next byte verbatim.
            let mut q = i + 1;
            let mut closed = None;
            while q < n {
                match line[q].byte {
                    b'"' => {
                        closed = Some(q);
                        break;
                    }
                    b'\\' if q + 1 < n => q += 2,
                    b'\\' => break,
                    _ => q += 1,
                }
            }
            if let Some(q) = closed {
                words.push(word(&line[i + 1..q], true, line[i].pos)?);
                i = q + 1;
                continue;
            }
        }
        let mut j = i;
        while j < n && !is_blank(line[j].byte) {
            j += 1;
        }
        words.push(word(&line[i..j], false, line[i].pos)?);
        i = j;
    }
    Ok(words)
}

fn first_non_blank(line: &[Ch]) -> Option<Pos> {
    line.iter().find(|c| !is_blank(c.byte)).map(|c| c.pos)
}

struct Frame {
    words: Vec<Word>,
    open: Pos,
    entries: Vec<Entry>,
}

/// Parses scst.conf text into entries.
pub fn parse(input: &[u8]) -> Result<Vec<Entry>, Error> {
    let chars = preprocess(input)?;
    let mut root: Vec<Entry> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut line: Vec<Ch> = Vec::new();
    for ch in chars {
        match ch.byte {
            b'{' => {
                let words = split_words(&line)?;
                if words.is_empty() {
                    return Err(Error::new(ch.pos, ErrorKind::BlockWithoutHeader));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(Error::new(ch.pos, ErrorKind::TooDeep(MAX_DEPTH)));
                }
                stack.push(Frame {
                    words,
                    open: ch.pos,
                    entries: Vec::new(),
                });
                line.clear();
            }
            b'}' => {
                if let Some(pos) = first_non_blank(&line) {
                    return Err(Error::new(pos, ErrorKind::TextBeforeClose));
                }
                let frame = stack
                    .pop()
                    .ok_or_else(|| Error::new(ch.pos, ErrorKind::UnmatchedClose))?;
                let parent = match stack.last_mut() {
                    Some(f) => &mut f.entries,
                    None => &mut root,
                };
                parent.push(Entry {
                    words: frame.words,
                    block: Some(Block {
                        open: frame.open,
                        entries: frame.entries,
                    }),
                });
                line.clear();
            }
            b'\n' => {
                let words = split_words(&line)?;
                if !words.is_empty() {
                    let parent = match stack.last_mut() {
                        Some(f) => &mut f.entries,
                        None => &mut root,
                    };
                    parent.push(Entry { words, block: None });
                }
                line.clear();
            }
            _ => line.push(ch),
        }
    }
    if let Some(frame) = stack.last() {
        return Err(Error::new(frame.open, ErrorKind::UnclosedBlock));
    }
    if let Some(pos) = first_non_blank(&line) {
        return Err(Error::new(pos, ErrorKind::NoFinalNewline));
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(e: &Entry) -> Vec<&str> {
        e.words.iter().map(|w| w.text.as_str()).collect()
    }

    fn err(input: &str) -> Error {
        parse(input.as_bytes()).unwrap_err()
    }

    #[test]
    fn nested_sections_and_positions() {
        let input = "HANDLER vdisk_fileio {\n\tDEVICE disk01 {\n\t\tfilename /dev/ram0\n\t}\n}\n";
        let entries = parse(input.as_bytes()).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(texts(&entries[0]), ["HANDLER", "vdisk_fileio"]);
        let handler = entries[0].block.as_ref().unwrap();
        assert_eq!(handler.open, Pos::new(1, 22));
        let dev = &handler.entries[0];
        assert_eq!(texts(dev), ["DEVICE", "disk01"]);
        assert_eq!(dev.pos(), Pos::new(2, 2));
        let attr = &dev.block.as_ref().unwrap().entries[0];
        assert_eq!(texts(attr), ["filename", "/dev/ram0"]);
        assert_eq!(attr.words[1].pos, Pos::new(3, 12));
    }

    #[test]
    fn quoting_as_scstadmin_writes_it() {
        // escapeMeta: backslash and '#' are escaped, values with blanks are quoted.
        let input = "IncomingUser \"joe 12charsecret\"\nt10_dev_id a\\#b\nx \"a\\\\ b\"\n";
        let e = parse(input.as_bytes()).unwrap();
        assert_eq!(texts(&e[0]), ["IncomingUser", "joe 12charsecret"]);
        assert!(e[0].words[1].quoted);
        assert_eq!(texts(&e[1]), ["t10_dev_id", "a#b"]);
        // `\\` becomes `\` before splitting; inside quotes `\ ` is kept verbatim.
        assert_eq!(texts(&e[2]), ["x", "a\\ b"]);
    }

    #[test]
    fn word_splitting_corner_cases() {
        let e = parse(b"a\"b c\"\n\"x\"y\n\"\"\n\"open\n").unwrap();
        assert_eq!(texts(&e[0]), ["a\"b", "c\""]);
        assert_eq!(texts(&e[1]), ["x", "y"]);
        assert_eq!(texts(&e[2]), [""]);
        assert!(e[2].words[0].quoted);
        assert_eq!(texts(&e[3]), ["\"open"]);
        assert!(!e[3].words[0].quoted);
    }

    #[test]
    fn comments() {
        let e = parse(b"# full line\n  enabled 1 # trailing\n\t# indented\nfoo \\#bar\n").unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(texts(&e[0]), ["enabled", "1"]);
        assert_eq!(texts(&e[1]), ["foo", "#bar"]);
        let x = err("enabled 1# comment\n");
        assert_eq!(x.pos, Pos::new(1, 9));
        assert_eq!(x.kind, ErrorKind::CommentEatsChar('1'));
    }

    #[test]
    fn crlf_is_blank() {
        let e = parse(b"HANDLER h {\r\n\tDEVICE d\r\n}\r\n").unwrap();
        assert_eq!(texts(&e[0]), ["HANDLER", "h"]);
        assert_eq!(
            texts(&e[0].block.as_ref().unwrap().entries[0]),
            ["DEVICE", "d"]
        );
    }

    #[test]
    fn brace_on_same_line_and_text_after_close() {
        let e = parse(b"LUN 0 d { read_only 1\n}\nTARGET t {\n} enabled 1\n").unwrap();
        assert_eq!(texts(&e[0]), ["LUN", "0", "d"]);
        assert_eq!(
            texts(&e[0].block.as_ref().unwrap().entries[0]),
            ["read_only", "1"]
        );
        assert_eq!(texts(&e[2]), ["enabled", "1"]);
    }

    #[test]
    fn structural_errors_point_at_the_culprit() {
        let x = err("A b {\n  c d }\n");
        assert_eq!(
            (x.pos, x.kind),
            (Pos::new(2, 3), ErrorKind::TextBeforeClose)
        );
        let x = err("a b\n}\n");
        assert_eq!((x.pos, x.kind), (Pos::new(2, 1), ErrorKind::UnmatchedClose));
        let x = err("A b {\n  C d {\n}\n");
        assert_eq!((x.pos, x.kind), (Pos::new(1, 5), ErrorKind::UnclosedBlock));
        let x = err("  {\n}\n");
        assert_eq!(
            (x.pos, x.kind),
            (Pos::new(1, 3), ErrorKind::BlockWithoutHeader)
        );
        let x = err("a b\n  c d");
        assert_eq!((x.pos, x.kind), (Pos::new(2, 3), ErrorKind::NoFinalNewline));
        let x = err("LUN 0 disk extra\n");
        assert_eq!(x.pos, Pos::new(1, 12));
        assert_eq!(x.kind, ErrorKind::TooManyWords("extra".into()));
        let x = err("[HANDLER vdisk]\n");
        assert_eq!(
            (x.pos, x.kind),
            (Pos::new(1, 1), ErrorKind::OldFormat("HANDLER".into()))
        );
        let x = err(&"a {\n".repeat(MAX_DEPTH + 1));
        assert_eq!(x.pos, Pos::new(to_u32(MAX_DEPTH + 1), 3));
        assert_eq!(x.kind, ErrorKind::TooDeep(MAX_DEPTH));
    }

    #[test]
    fn last_line_without_newline_is_fine_when_blank_or_brace() {
        assert_eq!(parse(b"a {\n}").unwrap().len(), 1);
        assert_eq!(parse(b"a b\n   ").unwrap().len(), 1);
        assert!(parse(b"").unwrap().is_empty());
    }

    #[test]
    fn columns_count_characters() {
        let e = parse("é \"ü x\" z\n".as_bytes()).unwrap();
        assert_eq!(e[0].words[1].pos, Pos::new(1, 3));
        assert_eq!(e[0].words[2].pos, Pos::new(1, 9));
        let x = parse(b"a \xff\n").unwrap_err();
        assert_eq!(x.pos, Pos::new(1, 3));
        assert!(matches!(x.kind, ErrorKind::InvalidUtf8(_)));
    }
}
