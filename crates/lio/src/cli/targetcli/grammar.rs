//! targetcli's command line: `[PATH] [COMMAND] [PARAM...] [KEY=VALUE...]`.
//!
//! The rules are configshell-fb's (`ConfigShell.__init__`, pyparsing grammar): the first
//! token is a path when it contains `/` or is `.`, `..` or `*`; the next token is the
//! command (letters, digits, `_`); every later token is a keyword parameter when it
//! starts with `[A-Za-z0-9_-]+=` and a positional one otherwise. configshell has no
//! quoting; rustio also accepts `'...'` and `"..."` so a value may hold spaces.

use std::fmt;

/// One parsed command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Line {
    /// The path the command runs at (`None`: the current node).
    pub path: Option<String>,
    /// The command (`None` with a path: `cd` there, as configshell does).
    pub command: Option<String>,
    /// Positional parameters, in order.
    pub pparams: Vec<String>,
    /// `key=value` parameters, in order.
    pub kparams: Vec<(String, String)>,
}

/// A line that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError(pub String);

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Splits a line at whitespace; quotes group, and are removed.
pub fn tokenize(line: &str) -> Result<Vec<String>, SyntaxError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_token = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                in_token = true;
            }
            None if c.is_whitespace() => {
                if in_token {
                    out.push(std::mem::take(&mut cur));
                    in_token = false;
                }
            }
            None => {
                cur.push(c);
                in_token = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(SyntaxError(format!("Syntax error: unterminated quote {q}")));
    }
    if in_token {
        out.push(cur);
    }
    Ok(out)
}

/// configshell's path token: `[A-Za-z0-9:_.\[\]-]*/[A-Za-z0-9:_.\[\]/-]*`, `..`, `.`,
/// `*` or an `@bookmark`.
pub fn is_path_token(t: &str) -> bool {
    let path_char = |c: char| c.is_ascii_alphanumeric() || ":_.[]-/".contains(c);
    t == "."
        || t == ".."
        || t == "*"
        || t.starts_with('@')
        || (t.contains('/') && t.chars().all(path_char))
}

fn is_command_token(t: &str) -> bool {
    !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `key=value` when the key is configshell's keyword (`[A-Za-z0-9_-]+`).
fn split_kparam(t: &str) -> Option<(String, String)> {
    let (k, v) = t.split_once('=')?;
    let keyword = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    keyword.then(|| (k.to_owned(), v.to_owned()))
}

/// Parses one command line.
pub fn parse_line(line: &str) -> Result<Line, SyntaxError> {
    parse_tokens(tokenize(line)?)
}

/// Parses already split tokens (see [`tokenize`]).
pub fn parse_tokens(tokens: Vec<String>) -> Result<Line, SyntaxError> {
    let mut it = tokens.into_iter().peekable();
    let mut line = Line::default();
    if it.peek().is_some_and(|t| is_path_token(t)) {
        line.path = it.next();
    }
    if let Some(t) = it.next() {
        if !is_command_token(&t) {
            return Err(SyntaxError(format!("Syntax error: {t:?} is not a command")));
        }
        line.command = Some(t);
    }
    for t in it {
        match split_kparam(&t) {
            Some(kv) => line.kparams.push(kv),
            None => line.pparams.push(t),
        }
    }
    Ok(line)
}

/// Joins `path` to `cwd` and removes `.`, `..` and repeated `/` (configshell's
/// `get_node` walks the same way; `..` of `/` is `/`).
pub fn normalize(cwd: &str, path: &str) -> String {
    let mut parts: Vec<&str> = if path.starts_with('/') {
        Vec::new()
    } else {
        cwd.split('/').filter(|s| !s.is_empty()).collect()
    };
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The parent of a normalized path (`/` for `/`).
pub fn parent(path: &str) -> &str {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((p, _)) => p,
    }
}

/// configshell's `ui_type_bool`: `true`/`false` in any case.
pub fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("Syntax error, '{v}' is not true|false.")),
    }
}

/// The prompt configshell shows: the path, cut in the middle to `prompt_length`
/// (30 by default) characters, then `> `.
pub fn prompt(path: &str, prompt_length: usize) -> String {
    let n = path.chars().count();
    if prompt_length == 0 || n <= prompt_length {
        return format!("{path}> ");
    }
    let half = prompt_length.saturating_sub(3) / 2;
    let head: String = path.chars().take(half).collect();
    let tail: String = path.chars().skip(n.saturating_sub(half)).collect();
    format!("{head}...{tail}> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn targetcli_man_page_one_liners_parse_like_configshell() {
        // targetcli(8) EXAMPLES and the scripts.
        let l = parse_line("/backstores/fileio create disk1 /srv/disk1.img 1G").unwrap();
        assert_eq!(l.path.as_deref(), Some("/backstores/fileio"));
        assert_eq!(l.command.as_deref(), Some("create"));
        assert_eq!(l.pparams, ["disk1", "/srv/disk1.img", "1G"]);
        assert!(l.kparams.is_empty());

        let l = parse_line(
            "/iscsi/iqn.2003-01.org.linux-iscsi.x:sn.1/tpg1 set attribute authentication=0 \
             demo_mode_write_protect=0 generate_node_acls=1",
        )
        .unwrap();
        assert_eq!(l.command.as_deref(), Some("set"));
        assert_eq!(l.pparams, ["attribute"]);
        assert_eq!(
            l.kparams,
            [
                kv("authentication", "0"),
                kv("demo_mode_write_protect", "0"),
                kv("generate_node_acls", "1")
            ]
        );

        let l = parse_line("saveconfig").unwrap();
        assert_eq!((l.path, l.command.as_deref()), (None, Some("saveconfig")));
        let l = parse_line("/ saveconfig").unwrap();
        assert_eq!(l.path.as_deref(), Some("/"));
        let l = parse_line("clearconfig confirm=True").unwrap();
        assert_eq!(l.kparams, [kv("confirm", "True")]);
        // An IQN has no '/', so it is a parameter, not a path.
        let l = parse_line("create iqn.2017-07.com.test:target-10-15-33").unwrap();
        assert_eq!(l.pparams, ["iqn.2017-07.com.test:target-10-15-33"]);
        // A path alone means cd.
        let l = parse_line("../acls").unwrap();
        assert_eq!((l.path.as_deref(), l.command), (Some("../acls"), None));
        // Empty value: configshell's Optional(value, default='').
        let l = parse_line("set auth userid=").unwrap();
        assert_eq!(l.kparams, [kv("userid", "")]);
    }

    #[test]
    fn quotes_group_and_bad_commands_are_refused() {
        let l = parse_line("set auth password='a b' userid=\"x\"").unwrap();
        assert_eq!(l.kparams, [kv("password", "a b"), kv("userid", "x")]);
        assert!(parse_line("set auth password='a").is_err());
        assert!(parse_line("/iscsi cre-ate").is_err());
        assert_eq!(parse_line("   ").unwrap(), Line::default());
    }

    #[test]
    fn paths_normalize_like_get_node() {
        assert_eq!(
            normalize("/iscsi/t/tpg1/luns", "../acls"),
            "/iscsi/t/tpg1/acls"
        );
        assert_eq!(normalize("/backstores", "/iscsi//t/"), "/iscsi/t");
        assert_eq!(normalize("/", ".."), "/");
        assert_eq!(normalize("/a/b", "."), "/a/b");
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(parent("/"), "/");
    }

    #[test]
    fn prompt_is_cut_in_the_middle_at_prompt_length() {
        assert_eq!(prompt("/", 30), "/> ");
        assert_eq!(prompt("/backstores/fileio", 30), "/backstores/fileio> ");
        // configshell: half = (30 - 3) // 2 = 13 characters each side.
        let p = prompt("/iscsi/iqn.2017-07.com.test:target-10-15-33/tpg1", 30);
        assert_eq!(p, "/iscsi/iqn.20...10-15-33/tpg1> ");
    }

    #[test]
    fn bools_are_configshell_true_false() {
        assert_eq!(parse_bool("True"), Ok(true));
        assert_eq!(parse_bool("false"), Ok(false));
        assert_eq!(
            parse_bool("1"),
            Err("Syntax error, '1' is not true|false.".into())
        );
    }
}
