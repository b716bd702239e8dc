//! The interactive shell: rustyline with completion from the live tree.

use std::borrow::Cow;
use std::cell::RefCell;
use std::io::Write;

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};

use super::grammar;
use super::session::{commands, groups, Fail, Options, Session, GLOBALS};
use crate::Lio;

/// Completes from a snapshot of the tree taken before each prompt.
struct Complete {
    cwd: String,
    nodes: Vec<String>,
    /// (path, group) -> parameter names.
    params: Vec<(String, String, Vec<String>)>,
}

impl Complete {
    fn children(&self, dir: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.as_str() != "/" && grammar::parent(n) == dir)
            .map(|n| n.rsplit('/').next().unwrap_or_default().to_owned())
            .collect()
    }

    /// Path completions of `word` relative to the current node.
    fn paths(&self, word: &str) -> Vec<String> {
        let (dir_part, leaf) = match word.rfind('/') {
            Some(i) => (&word[..=i], &word[i + 1..]),
            None => ("", word),
        };
        let dir = grammar::normalize(&self.cwd, if dir_part.is_empty() { "." } else { dir_part });
        self.children(&dir)
            .into_iter()
            .filter(|c| c.starts_with(leaf))
            .map(|c| format!("{dir_part}{c}/"))
            .collect()
    }

    fn candidates(&self, before: &[String], word: &str) -> Vec<String> {
        let (node, rest) = match before.first() {
            Some(p) if grammar::is_path_token(p) => {
                (grammar::normalize(&self.cwd, p), &before[1..])
            }
            _ => (self.cwd.clone(), before),
        };
        let cmd_names = |n: &str| -> Vec<String> {
            commands(n)
                .iter()
                .filter_map(|s| s.split_whitespace().next())
                .map(|s| format!("{s} "))
                .collect()
        };
        let starts = |v: Vec<String>| {
            v.into_iter()
                .filter(|c| c.starts_with(word))
                .collect::<Vec<_>>()
        };
        match rest {
            [] if before.is_empty() => {
                let mut v = starts(cmd_names(&node));
                v.extend(self.paths(word));
                v
            }
            [] => starts(cmd_names(&node)),
            [cmd, ..] if cmd == "cd" || cmd == "ls" => self.paths(word),
            [cmd] if cmd == "set" || cmd == "get" => {
                starts(groups(&node).iter().map(|g| format!("{g} ")).collect())
            }
            [cmd, group, ..] if cmd == "set" || cmd == "get" => {
                let eq = if cmd == "set" { "=" } else { " " };
                let names: Vec<String> = if group == "global" {
                    GLOBALS.iter().map(|(n, _, _)| (*n).to_owned()).collect()
                } else {
                    self.params
                        .iter()
                        .find(|(p, g, _)| *p == node && g == group)
                        .map(|(_, _, v)| v.clone())
                        .unwrap_or_default()
                };
                starts(names.into_iter().map(|n| format!("{n}{eq}")).collect())
            }
            [cmd, ..] => {
                let Some(syntax) = commands(&node)
                    .into_iter()
                    .find(|s| s.split_whitespace().next() == Some(cmd.as_str()))
                else {
                    return Vec::new();
                };
                let mut v: Vec<String> = syntax
                    .split_whitespace()
                    .skip(1)
                    .map(|w| format!("{}=", w.trim_matches(|c| c == '[' || c == ']')))
                    .collect();
                if cmd == "create" || cmd == "delete" {
                    v.extend(self.paths(word).into_iter().filter(|p| p.starts_with('/')));
                }
                starts(v)
            }
        }
    }
}

struct ShellHelper {
    data: RefCell<Complete>,
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let head = &line[..pos];
        let start = head.rfind(char::is_whitespace).map(|i| i + 1).unwrap_or(0);
        let before: Vec<String> = head[..start]
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let word = &head[start..];
        let v = self.data.borrow().candidates(&before, word);
        let pairs = v
            .into_iter()
            .map(|c| Pair {
                display: c.trim_end().to_owned(),
                replacement: c,
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        _default: bool,
    ) -> Cow<'b, str> {
        Cow::Borrowed(prompt)
    }
}

impl Validator for ShellHelper {}

impl Helper for ShellHelper {}

fn snapshot(s: &Session<'_>) -> Complete {
    let nodes: Vec<String> = s
        .nodes()
        .map(|v| v.into_iter().map(|(p, _)| p).collect())
        .unwrap_or_default();
    let mut params = Vec::new();
    for g in groups(s.cwd()) {
        if g != "global" {
            let names = s
                .group_values(s.cwd(), g)
                .map(|m| m.into_keys().collect())
                .unwrap_or_default();
            params.push((s.cwd().to_owned(), g.to_owned(), names));
        }
    }
    Complete {
        cwd: s.cwd().to_owned(),
        nodes,
        params,
    }
}

/// Runs the interactive shell on the terminal; returns the exit status. Ctrl-D and
/// `exit` leave it (auto-saving when `auto_save_on_exit` is set), Ctrl-C drops the
/// current line.
pub fn run_shell(lio: &Lio, opts: Options, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let history = opts.home.as_ref().map(|h| h.join("history.txt"));
    let mut s = Session::new(lio, opts);
    let mut ed: Editor<ShellHelper, DefaultHistory> = match Editor::new() {
        Ok(e) => e,
        Err(e) => {
            let _ = writeln!(err, "cannot start the line editor: {e}");
            return 1;
        }
    };
    ed.set_helper(Some(ShellHelper {
        data: RefCell::new(snapshot(&s)),
    }));
    if let Some(h) = &history {
        if let Some(dir) = h.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = ed.load_history(h);
    }
    let _ = writeln!(
        out,
        "rustio shell version {} (targetcli grammar)\nFor help on commands, type 'help'.\n",
        env!("CARGO_PKG_VERSION")
    );
    loop {
        if let Some(h) = ed.helper_mut() {
            h.data = RefCell::new(snapshot(&s));
        }
        let line = match ed.readline(&s.prompt()) {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => {
                let _ = writeln!(out, "exit");
                break;
            }
            Err(e) => {
                let _ = writeln!(err, "cannot read the terminal: {e}");
                break;
            }
        };
        if !line.trim().is_empty() {
            let _ = ed.add_history_entry(line.as_str());
            if let Some(h) = &history {
                let _ = ed.save_history(h);
            }
        }
        if let Err(Fail(m)) = s.run_line(&line, out) {
            let _ = writeln!(err, "{m}");
        }
        let _ = out.flush();
        if s.exited() {
            break;
        }
    }
    match s.exit_save(out) {
        Ok(()) => 0,
        Err(Fail(m)) => {
            let _ = writeln!(err, "{m}");
            1
        }
    }
}
