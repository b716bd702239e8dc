//! One targetcli session: the current node, the global preferences, and the commands
//! of each node of the tree, mapped onto rustio's operations (`super::super::exec`:
//! every change is a Plan with rollback). Messages are targetcli-fb's own
//! (`ui_backstore.py`, `ui_target.py`, `ui_root.py`, configshell `node.py`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use rustio_config::fabric::fabric_info;
use rustio_config::{ConfigValue, Plugin, SaveConfig};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::grammar::{self, Line};
use crate::addr::{parse_lun_component, ObjectPath};
use crate::cli::exec::{self, Ctx};
use crate::cli::{
    BackstoreKind, ClearArgs, CreateWhat, DeleteArgs, RestoreArgs, SaveArgs, SessionsArgs, SetWhat,
};
use crate::Lio;

/// targetcli's default portal address (`ui_target.py`: `default_portal_listen = "::0"`).
const DEFAULT_PORTAL: &str = "::0";
const DEFAULT_PORT: u64 = 3260;

/// A failed command: the text targetcli would print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fail(pub String);

impl From<crate::Error> for Fail {
    fn from(e: crate::Error) -> Fail {
        let mut text = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            text.push_str(&format!(": {s}"));
            src = s.source();
        }
        Fail(text)
    }
}

impl From<String> for Fail {
    fn from(s: String) -> Fail {
        Fail(s)
    }
}

type R<T = ()> = std::result::Result<T, Fail>;

/// targetcli's global preferences (`targetcli_shell.py` `default_prefs`) that rustio
/// honours; `set global NAME=VALUE` changes them and they persist in `prefs.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Prefs {
    /// Enable a TPG when it is created.
    pub auto_enable_tpgt: bool,
    /// Map new LUNs into every ACL and every LUN into a new ACL.
    pub auto_add_mapped_luns: bool,
    /// `cd` into what `create` made.
    pub auto_cd_after_create: bool,
    /// `saveconfig` when the shell exits.
    pub auto_save_on_exit: bool,
    /// Give a new iSCSI TPG the portal [::0]:3260.
    pub auto_add_default_portal: bool,
    /// Set `emulate_model_alias=1` on new backstores (the INQUIRY model is their name).
    pub export_backstore_name_as_model: bool,
    /// Backups of /etc/target/saveconfig.json kept by `saveconfig`.
    pub max_backup_files: String,
    /// Longest prompt path before it is cut in the middle.
    pub prompt_length: u64,
}

impl Default for Prefs {
    fn default() -> Prefs {
        Prefs {
            auto_enable_tpgt: true,
            auto_add_mapped_luns: true,
            auto_cd_after_create: false,
            auto_save_on_exit: true,
            auto_add_default_portal: true,
            export_backstore_name_as_model: true,
            max_backup_files: "10".into(),
            prompt_length: 30,
        }
    }
}

/// Names, types and descriptions of the `global` group (targetcli `ui_node.py`).
pub const GLOBALS: [(&str, &str, &str); 8] = [
    ("auto_add_default_portal", "bool", "If true, adds a portal listening on all IPs to new targets."),
    ("auto_add_mapped_luns", "bool", "If true, automatically create node ACLs mapped LUNs after creating a new target LUN or a new node ACL"),
    ("auto_cd_after_create", "bool", "If true, changes current path to newly created objects."),
    ("auto_enable_tpgt", "bool", "If true, automatically enables TPGTs upon creation."),
    ("auto_save_on_exit", "bool", "If true, saves configuration on exit."),
    ("export_backstore_name_as_model", "bool", "If true, the backstore name is used for the scsi inquiry model name."),
    ("max_backup_files", "string", "Max no. of configurations to be backed up in /etc/target/backup/ directory."),
    ("prompt_length", "number", "Max length of the shell prompt path, 0 for no limit."),
];

impl Prefs {
    fn get(&self, name: &str) -> Option<String> {
        let b = |v: bool| v.to_string();
        Some(match name {
            "auto_add_default_portal" => b(self.auto_add_default_portal),
            "auto_add_mapped_luns" => b(self.auto_add_mapped_luns),
            "auto_cd_after_create" => b(self.auto_cd_after_create),
            "auto_enable_tpgt" => b(self.auto_enable_tpgt),
            "auto_save_on_exit" => b(self.auto_save_on_exit),
            "export_backstore_name_as_model" => b(self.export_backstore_name_as_model),
            "max_backup_files" => self.max_backup_files.clone(),
            "prompt_length" => self.prompt_length.to_string(),
            _ => return None,
        })
    }

    fn set(&mut self, name: &str, v: &str) -> R {
        let flag =
            |v: &str| grammar::parse_bool(v).map_err(|m| Fail(format!("Not setting {name}! {m}")));
        match name {
            "auto_add_default_portal" => self.auto_add_default_portal = flag(v)?,
            "auto_add_mapped_luns" => self.auto_add_mapped_luns = flag(v)?,
            "auto_cd_after_create" => self.auto_cd_after_create = flag(v)?,
            "auto_enable_tpgt" => self.auto_enable_tpgt = flag(v)?,
            "auto_save_on_exit" => self.auto_save_on_exit = flag(v)?,
            "export_backstore_name_as_model" => self.export_backstore_name_as_model = flag(v)?,
            "max_backup_files" => self.max_backup_files = v.to_owned(),
            "prompt_length" => {
                self.prompt_length = v.parse().map_err(|_| {
                    Fail(format!(
                        "Not setting {name}! Syntax error, '{v}' is not a NUMBER."
                    ))
                })?
            }
            _ => return Err(Fail(format!("Unknown parameter {name} in group 'global'."))),
        }
        Ok(())
    }
}

/// Where a session keeps its state.
#[derive(Debug, Clone)]
pub struct Options {
    /// `saveconfig` without a file, and auto-save on exit, write here.
    pub save_file: PathBuf,
    /// Directory of `prefs.json` and `history.txt` (targetcli: `~/.targetcli`);
    /// `None`: preferences are not kept.
    pub home: Option<PathBuf>,
}

impl Options {
    /// `RUSTIO_SAVE_FILE` (default /etc/target/saveconfig.json) and `RUSTIO_HOME`
    /// (default `~/.rustio`).
    pub fn from_env() -> Options {
        let save_file = std::env::var_os("RUSTIO_SAVE_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(rustio_config::store::DEFAULT_SAVE_FILE));
        let home = std::env::var_os("RUSTIO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".rustio")));
        Options { save_file, home }
    }
}

/// What kind of node a path names, with the commands it has.
fn kind(path: &str) -> R<ObjectPath> {
    path.parse::<ObjectPath>().map_err(Fail::from)
}

/// The commands of a node and their configshell syntax (`help` prints these).
pub fn commands(path: &str) -> Vec<&'static str> {
    let mut c = vec![
        "cd [path]",
        "exit",
        "get [group] [parameter...]",
        "help [topic]",
        "ls [path] [depth]",
        "pwd",
        "refresh",
        "set [group] [parameter=value...]",
        "status",
    ];
    let extra: &[&str] = match kind(path) {
        Ok(ObjectPath::Root) => &[
            "clearconfig [confirm]",
            "restoreconfig [savefile] [clear_existing]",
            "saveconfig [savefile]",
            "sessions [action] [sid]",
            "version",
        ],
        Ok(ObjectPath::Plugin(p)) => match p {
            Plugin::Fileio => &[
                "create name file_or_dev [size] [write_back] [sparse] [wwn]",
                "delete name [save]",
            ],
            Plugin::Block => &["create name dev [readonly] [wwn]", "delete name [save]"],
            Plugin::Ramdisk => &["create name size [nullio] [wwn]", "delete name [save]"],
            Plugin::Pscsi => &["create name dev", "delete name [save]"],
            _ => &["delete name [save]"],
        },
        Ok(ObjectPath::StorageObject(_)) => &["info"],
        Ok(ObjectPath::AluaGroups(_)) => &["create name tag", "delete name"],
        Ok(ObjectPath::Fabric(_)) => &["create [wwn]", "delete wwn", "info"],
        Ok(ObjectPath::Target(_)) => &["create [tag]", "delete tag", "info"],
        Ok(ObjectPath::Tpg(_)) => &["disable", "enable", "info"],
        Ok(ObjectPath::Luns(_)) => &[
            "create storage_object [lun] [add_mapped_luns]",
            "delete lun",
        ],
        Ok(ObjectPath::Lun(_)) | Ok(ObjectPath::MappedLun(_)) => &["info"],
        Ok(ObjectPath::Acls(_)) => &["create wwn [add_mapped_luns]", "delete wwn"],
        Ok(ObjectPath::Acl(_)) => &[
            "create mapped_lun tpg_lun_or_backstore [write_protect]",
            "delete mapped_lun",
            "info",
        ],
        Ok(ObjectPath::Portals(_)) => {
            &["create [ip_address] [ip_port]", "delete ip_address ip_port"]
        }
        Ok(ObjectPath::Portal(_)) => &["enable_iser boolean", "info"],
        _ => &[],
    };
    c.extend_from_slice(extra);
    c.sort();
    c
}

/// The configuration groups of `set`/`get` at a node.
pub fn groups(path: &str) -> Vec<&'static str> {
    let mut g = vec!["global"];
    match kind(path) {
        Ok(ObjectPath::StorageObject(_)) => g.push("attribute"),
        Ok(ObjectPath::Tpg(_)) => g.extend(["attribute", "auth", "parameter"]),
        Ok(ObjectPath::Acl(_)) => g.extend(["attribute", "auth"]),
        Ok(ObjectPath::Fabric(f)) if fabric_info(&f).is_some_and(|i| i.discovery_auth) => {
            g.push("discovery_auth")
        }
        _ => {}
    }
    g
}

/// Binds positional and keyword parameters to a configshell signature
/// (`create name file_or_dev [size]`), with configshell's `assert_params` messages.
fn bind(syntax: &str, line: &Line) -> R<BTreeMap<String, String>> {
    let mut names = Vec::new();
    let mut required = 0usize;
    for w in syntax.split_whitespace().skip(1) {
        if let Some(opt) = w.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
            names.push(opt.trim_end_matches("..."));
        } else {
            names.push(w);
            required += 1;
        }
    }
    if line.pparams.len() > names.len() {
        return Err(Fail(format!(
            "Got {} positionnal parameters, expected at most {}.",
            line.pparams.len() + line.kparams.len(),
            names.len()
        )));
    }
    let mut out = BTreeMap::new();
    for (n, v) in names.iter().zip(&line.pparams) {
        out.insert((*n).to_owned(), v.clone());
    }
    let unexpected: Vec<&str> = line
        .kparams
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !names.contains(k))
        .collect();
    match unexpected.as_slice() {
        [] => {}
        [one] => return Err(Fail(format!("Unexpected keyword parameter '{one}'."))),
        many => {
            let list: Vec<String> = many.iter().map(|k| format!("'{k}'")).collect();
            return Err(Fail(format!(
                "Unexpected keyword parameters {}.",
                list.join(", ")
            )));
        }
    }
    for (k, v) in &line.kparams {
        if out.insert(k.clone(), v.clone()).is_some() {
            return Err(Fail(format!("Duplicate parameter {k}.")));
        }
    }
    let missing: Vec<&str> = names[..required]
        .iter()
        .copied()
        .filter(|n| !out.contains_key(*n))
        .collect();
    match missing.as_slice() {
        [] => Ok(out),
        [one] => Err(Fail(format!("Missing required parameter {one}"))),
        many => {
            let list: Vec<String> = many.iter().map(|k| format!("'{k}'")).collect();
            Err(Fail(format!(
                "Missing required parameters {}",
                list.join(", ")
            )))
        }
    }
}

fn opt_bool(args: &BTreeMap<String, String>, name: &str, default: bool) -> R<bool> {
    args.get(name)
        .map(|v| grammar::parse_bool(v).map_err(Fail))
        .unwrap_or(Ok(default))
}

/// A shell (or a run of one-liners) on one LIO tree.
#[derive(Debug)]
pub struct Session<'a> {
    lio: &'a Lio,
    cwd: String,
    /// The global preferences.
    pub prefs: Prefs,
    opts: Options,
    exit: bool,
}

impl<'a> Session<'a> {
    /// A session at `/`, with the preferences saved under `opts.home`.
    pub fn new(lio: &'a Lio, opts: Options) -> Session<'a> {
        let prefs = opts
            .home
            .as_ref()
            .and_then(|h| std::fs::read_to_string(h.join("prefs.json")).ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        Session {
            lio,
            cwd: "/".into(),
            prefs,
            opts,
            exit: false,
        }
    }

    /// The current path.
    pub fn cwd(&self) -> &str {
        &self.cwd
    }

    /// Whether `exit` was run.
    pub fn exited(&self) -> bool {
        self.exit
    }

    /// The prompt for the current path.
    pub fn prompt(&self) -> String {
        let n = usize::try_from(self.prefs.prompt_length).unwrap_or(usize::MAX);
        grammar::prompt(&self.cwd, n)
    }

    /// Every path of the live tree (for completion and path checks).
    pub fn nodes(&self) -> R<Vec<(String, Value)>> {
        Ok(super::super::ls::node_list(&self.lio.live()?))
    }

    /// Resolves `path` from the current node like configshell's `get_node`, with two
    /// rustio extensions: a component ending in `...` stands for the one child it
    /// begins, and a relative path that is not below the current node is tried from `/`.
    pub fn resolve(&self, path: &str) -> R<String> {
        let nodes = self.nodes()?;
        let exists = |p: &str| nodes.iter().any(|(n, _)| n == p);
        let walk = |start: &str| -> R<String> {
            let mut cur = if path.starts_with('/') {
                "/".to_owned()
            } else {
                start.to_owned()
            };
            for c in path.split('/') {
                let next = match c {
                    "" | "." => continue,
                    ".." => grammar::parent(&cur).to_owned(),
                    _ => {
                        let base = if cur == "/" {
                            String::new()
                        } else {
                            cur.clone()
                        };
                        let exact = format!("{base}/{c}");
                        match c.strip_suffix("...") {
                            _ if exists(&exact) => exact,
                            Some(prefix) if !prefix.is_empty() => {
                                let hits: Vec<&String> = nodes
                                    .iter()
                                    .map(|(n, _)| n)
                                    .filter(|n| grammar::parent(n) == cur.as_str())
                                    .filter(|n| n[base.len() + 1..].starts_with(prefix))
                                    .collect();
                                match hits.as_slice() {
                                    [one] => (*one).clone(),
                                    _ => return Err(Fail(format!("No such path {exact}"))),
                                }
                            }
                            _ => return Err(Fail(format!("No such path {exact}"))),
                        }
                    }
                };
                cur = next;
            }
            Ok(cur)
        };
        match walk(&self.cwd) {
            Err(e) if !path.starts_with('/') && self.cwd != "/" => walk("/").map_err(|_| e),
            r => r,
        }
    }

    /// Runs one command line; output and messages go to `out`.
    pub fn run_line(&mut self, text: &str, out: &mut dyn Write) -> R {
        let line = grammar::parse_line(text.trim()).map_err(|e| Fail(e.0))?;
        self.run(line, out)
    }

    /// Runs a parsed command line.
    pub fn run(&mut self, line: Line, out: &mut dyn Write) -> R {
        if line.path.is_none() && line.command.is_none() {
            return Ok(());
        }
        let path = match line.path.as_deref() {
            Some("*") => {
                return Err(Fail(
                    "rustio does not run a command on every child ('*')".into(),
                ))
            }
            Some(b) if b.starts_with('@') => {
                return Err(Fail(format!("No such bookmark {}", &b[1..])))
            }
            Some(p) => self.resolve(p)?,
            None => self.cwd.clone(),
        };
        let Some(command) = line.command.clone() else {
            self.cwd = path;
            return Ok(());
        };
        let syntax = commands(&path)
            .into_iter()
            .find(|s| s.split_whitespace().next() == Some(command.as_str()))
            .ok_or_else(|| Fail(format!("Command not found {command}")))?;
        match command.as_str() {
            "set" => return self.set(&path, &line, out),
            "get" => return self.get(&path, &line, out),
            _ => {}
        }
        let args = bind(syntax, &line)?;
        self.dispatch(&path, &command, &args, out)
    }

    fn say(out: &mut dyn Write, text: impl AsRef<str>) -> R {
        writeln!(out, "{}", text.as_ref()).map_err(|e| Fail(format!("cannot write output: {e}")))
    }

    /// Runs an `exec` command with its own messages captured (targetcli's are printed
    /// instead); returns what it printed.
    fn quiet(&self, f: impl FnOnce(&mut Ctx<'_>) -> crate::Result<()>) -> R<String> {
        let mut buf = Vec::new();
        let mut err = Vec::new();
        let mut ctx = Ctx {
            lio: self.lio,
            out: &mut buf,
            err: &mut err,
        };
        f(&mut ctx)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    fn dump(&self) -> R<SaveConfig> {
        Ok(self.lio.dump()?)
    }

    fn created(&mut self, path: String, out: &mut dyn Write) -> R {
        if self.prefs.auto_cd_after_create {
            Self::say(out, format!("Entering new node {path}"))?;
            self.cwd = path;
        }
        Ok(())
    }

    fn dispatch(
        &mut self,
        path: &str,
        command: &str,
        args: &BTreeMap<String, String>,
        out: &mut dyn Write,
    ) -> R {
        let a = |n: &str| args.get(n).cloned();
        match command {
            "cd" => {
                self.cwd = match a("path") {
                    Some(p) => self.resolve(&p)?,
                    None => "/".into(),
                };
                Ok(())
            }
            "pwd" => Self::say(out, &self.cwd),
            "ls" => {
                let target = match a("path") {
                    Some(p) => self.resolve(&p)?,
                    None => path.to_owned(),
                };
                if let Some(d) = a("depth") {
                    d.parse::<u64>()
                        .map_err(|_| Fail("The tree depth must be a number.".into()))?;
                }
                let tree = self.lio.live()?;
                for l in super::super::ls::render_tree(&tree, &kind(&target)?)? {
                    Self::say(out, l)?;
                }
                Ok(())
            }
            "exit" => {
                self.exit = true;
                Ok(())
            }
            "help" => self.help(path, a("topic"), out),
            "refresh" => Ok(()),
            "status" => {
                let summary = self.summary(path)?;
                Self::say(out, format!("Status for {path}: {summary}"))
            }
            "info" => self.info(path, out),
            "version" => Self::say(
                out,
                format!(
                    "rustio version {} (targetcli grammar)",
                    env!("CARGO_PKG_VERSION")
                ),
            ),
            "saveconfig" => self.saveconfig(a("savefile"), out),
            "restoreconfig" => {
                let file = a("savefile")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| self.opts.save_file.clone());
                let clear_existing = opt_bool(args, "clear_existing", false)?;
                let r = RestoreArgs {
                    file: file.clone(),
                    clear_existing,
                    dry_run: false,
                    global: Default::default(),
                };
                self.quiet(|c| exec::restore(c, &r))?;
                Self::say(
                    out,
                    format!("Configuration restored from {}", file.display()),
                )
            }
            "clearconfig" => {
                if !opt_bool(args, "confirm", false)? {
                    // rtslib RTSRoot.clear_existing.
                    return Err(Fail("As a precaution, confirm=True needs to be set".into()));
                }
                self.quiet(|c| {
                    exec::clear(
                        c,
                        &ClearArgs {
                            confirm: true,
                            global: Default::default(),
                        },
                    )
                })?;
                self.cwd = "/".into();
                Self::say(out, "All configuration cleared")
            }
            "sessions" => {
                let action = a("action").unwrap_or_else(|| "list".into());
                if !["list", "detail"].contains(&action.as_str()) {
                    return Err(Fail("action must be one of: list, detail".into()));
                }
                let s = SessionsArgs {
                    detail: action == "detail",
                    json: false,
                    global: Default::default(),
                };
                let mut ctx = Ctx {
                    lio: self.lio,
                    out,
                    err: &mut std::io::sink(),
                };
                Ok(super::super::ls::sessions(&mut ctx, &s)?)
            }
            "create" => self.create(path, args, out),
            "delete" => self.delete(path, args, out),
            "enable" | "disable" => {
                let on = command == "enable";
                let ObjectPath::Tpg(t) = kind(path)? else {
                    return Err(Fail("Command not found enable".into()));
                };
                let live = self.dump()?;
                let now = live
                    .target(&t.target.fabric, &t.target.wwn)
                    .and_then(|x| x.tpgs.iter().find(|g| g.tag == Some(t.tag)))
                    .and_then(|g| g.enable)
                    .unwrap_or(false);
                if now == on {
                    return Self::say(out, format!("The TPGT is already {command}d."));
                }
                let w = SetWhat::Enable {
                    path: path.to_owned(),
                    value: if on { "1" } else { "0" }.into(),
                };
                self.quiet(|c| exec::set(c, w))?;
                Self::say(out, format!("The TPGT has been {command}d."))
            }
            "enable_iser" => {
                let on = grammar::parse_bool(&a("boolean").unwrap_or_default()).map_err(Fail)?;
                let w = SetWhat::Iser {
                    path: path.to_owned(),
                    value: on.to_string(),
                };
                self.quiet(|c| exec::set(c, w))?;
                Self::say(
                    out,
                    format!("iSER enable now: {}", if on { "True" } else { "False" }),
                )
            }
            other => Err(Fail(format!("Command not found {other}"))),
        }
    }

    fn help(&self, path: &str, topic: Option<String>, out: &mut dyn Write) -> R {
        let cmds = commands(path);
        match topic {
            None => {
                Self::say(out, "AVAILABLE COMMANDS\n==================\nThe following commands are available in the\ncurrent path:\n")?;
                for c in cmds {
                    Self::say(out, format!("  - {c}"))?;
                }
                Ok(())
            }
            Some(t) => {
                let s = cmds
                    .iter()
                    .find(|s| s.split_whitespace().next() == Some(t.as_str()))
                    .ok_or_else(|| Fail(format!("Cannot find help topic {t}.")))?;
                Self::say(out, format!("SYNTAX\n======\n{s}\n"))
            }
        }
    }

    fn node_json(&self, path: &str) -> R<Value> {
        self.nodes()?
            .into_iter()
            .find(|(p, _)| p == path)
            .map(|(_, j)| j)
            .ok_or_else(|| Fail(format!("No such path {path}")))
    }

    fn summary(&self, path: &str) -> R<String> {
        let tree = self.lio.live()?;
        let lines = super::super::ls::render_tree(&tree, &kind(path)?)?;
        let first = lines.first().cloned().unwrap_or_default();
        Ok(first
            .rsplit_once('[')
            .map(|(_, s)| s.trim_end_matches(']').to_owned())
            .unwrap_or_default())
    }

    fn info(&self, path: &str, out: &mut dyn Write) -> R {
        let j = self.node_json(path)?;
        let obj = j.get("config").cloned().unwrap_or(j);
        if let Value::Object(m) = obj {
            let mut items: Vec<(&String, &Value)> = m.iter().collect();
            items.sort_by(|a, b| a.0.cmp(b.0));
            for (k, v) in items {
                match v {
                    Value::Object(_) | Value::Array(_) => {}
                    Value::String(s) => Self::say(out, format!("{k}: {s}"))?,
                    other => Self::say(out, format!("{k}: {other}"))?,
                }
            }
        }
        Ok(())
    }

    fn saveconfig(&self, file: Option<String>, out: &mut dyn Write) -> R {
        let file = file
            .filter(|f| !f.is_empty())
            .map(|f| PathBuf::from(expand_user(&f)))
            .unwrap_or_else(|| self.opts.save_file.clone());
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Fail(format!("Cannot create directory [{}] {e}.", dir.display())))?;
        }
        let max_backups = self.prefs.max_backup_files.parse().unwrap_or(10);
        let s = SaveArgs {
            file: file.clone(),
            backup: false,
            no_backup: false,
            max_backups,
            global: Default::default(),
        };
        self.quiet(|c| exec::save(c, &s))?;
        Self::say(out, format!("Configuration saved to {}", file.display()))
    }

    /// Auto-save on exit (targetcli `main`: "Global pref auto_save_on_exit=true").
    pub fn exit_save(&self, out: &mut dyn Write) -> R {
        if self.prefs.auto_save_on_exit {
            Self::say(out, "Global pref auto_save_on_exit=true")?;
            self.saveconfig(None, out)?;
        }
        Ok(())
    }

    fn save_prefs(&self) {
        if let Some(h) = &self.opts.home {
            let _ = std::fs::create_dir_all(h);
            if let Ok(t) = serde_json::to_string_pretty(&self.prefs) {
                let _ = std::fs::write(h.join("prefs.json"), t);
            }
        }
    }

    /// The configuration group `get` and `set` name first: `None` once the groups of
    /// `path` are listed (no group given); an unknown group is configshell's error.
    fn config_group<'l>(path: &str, line: &'l Line, out: &mut dyn Write) -> R<Option<&'l str>> {
        let groups = groups(path);
        let Some(group) = line.pparams.first() else {
            Self::say(
                out,
                format!(
                    "AVAILABLE CONFIGURATION GROUPS\n==============================\n{}",
                    groups.join(" ")
                ),
            )?;
            return Ok(None);
        };
        if !groups.contains(&group.as_str()) {
            return Err(Fail(format!("Unknown configuration group: {group}")));
        }
        Ok(Some(group))
    }

    fn set(&mut self, path: &str, line: &Line, out: &mut dyn Write) -> R {
        let Some(group) = Self::config_group(path, line, out)? else {
            return Ok(());
        };
        if line.pparams.len() > 1 {
            return Err(Fail(format!("Unknown configuration group: {group}")));
        }
        if line.kparams.is_empty() {
            return self.get(path, line, out);
        }
        let settings: Vec<String> = line
            .kparams
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let p = path.to_owned();
        let what = match group {
            "global" => {
                for (k, v) in &line.kparams {
                    self.prefs.set(k, v)?;
                    let now = self.prefs.get(k).unwrap_or_default();
                    Self::say(out, format!("Parameter {k} is now '{now}'."))?;
                }
                self.save_prefs();
                return Ok(());
            }
            "attribute" => SetWhat::Attribute { path: p, settings },
            "parameter" => SetWhat::Parameter { path: p, settings },
            "auth" => SetWhat::Auth { path: p, settings },
            "discovery_auth" => SetWhat::Auth { path: p, settings },
            _ => return Err(Fail(format!("Unknown configuration group: {group}"))),
        };
        self.quiet(|c| exec::set(c, what))?;
        let values = self.group_values(path, group)?;
        for (k, _) in &line.kparams {
            let now = values.get(k).cloned().unwrap_or_default();
            Self::say(out, format!("Parameter {k} is now '{now}'."))?;
        }
        Ok(())
    }

    /// The current values of a configuration group at a node.
    pub fn group_values(&self, path: &str, group: &str) -> R<BTreeMap<String, String>> {
        if group == "global" {
            return Ok(GLOBALS
                .iter()
                .map(|(n, _, _)| ((*n).to_owned(), self.prefs.get(n).unwrap_or_default()))
                .collect());
        }
        let cfg = self.dump()?;
        let settings = |s: &rustio_config::model::Settings| -> BTreeMap<String, String> {
            s.iter()
                .map(|(k, v): (&String, &ConfigValue)| (k.clone(), v.to_configfs()))
                .collect()
        };
        let chap = |c: &rustio_config::Chap| -> BTreeMap<String, String> {
            [
                ("userid", &c.chap_userid),
                ("password", &c.chap_password),
                ("mutual_userid", &c.chap_mutual_userid),
                ("mutual_password", &c.chap_mutual_password),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.clone().unwrap_or_default()))
            .collect()
        };
        let tpg = |t: &crate::TpgRef| {
            cfg.target(&t.target.fabric, &t.target.wwn)
                .and_then(|x| x.tpgs.iter().find(|g| g.tag == Some(t.tag)))
                .ok_or_else(|| Fail(format!("No such path {t}")))
        };
        Ok(match (kind(path)?, group) {
            (ObjectPath::StorageObject(s), "attribute") => cfg
                .storage_object(s.plugin.as_str(), &s.name)
                .and_then(|o| o.common())
                .map(|c| settings(&c.attributes))
                .unwrap_or_default(),
            (ObjectPath::Tpg(t), "attribute") => settings(&tpg(&t)?.attributes),
            (ObjectPath::Tpg(t), "parameter") => settings(&tpg(&t)?.parameters),
            (ObjectPath::Tpg(t), "auth") => chap(&tpg(&t)?.auth),
            (ObjectPath::Acl(a), g) => {
                let acl = tpg(&a.tpg)?
                    .node_acls
                    .iter()
                    .find(|x| x.node_wwn == a.node_wwn)
                    .ok_or_else(|| Fail(format!("No such path {a}")))?;
                if g == "auth" {
                    chap(&acl.auth)
                } else {
                    settings(&acl.attributes)
                }
            }
            (ObjectPath::Fabric(f), "discovery_auth") => {
                let m = cfg.fabric_modules.iter().find(|m| m.name == f);
                let v = |x: Option<&Option<String>>| x.and_then(|o| o.clone()).unwrap_or_default();
                BTreeMap::from([
                    (
                        "enable".to_owned(),
                        m.and_then(|m| m.discovery_enable_auth)
                            .map(|b| if b { "1" } else { "0" })
                            .unwrap_or("0")
                            .to_owned(),
                    ),
                    ("userid".to_owned(), v(m.map(|m| &m.discovery_userid))),
                    ("password".to_owned(), v(m.map(|m| &m.discovery_password))),
                    (
                        "mutual_userid".to_owned(),
                        v(m.map(|m| &m.discovery_mutual_userid)),
                    ),
                    (
                        "mutual_password".to_owned(),
                        v(m.map(|m| &m.discovery_mutual_password)),
                    ),
                ])
            }
            _ => BTreeMap::new(),
        })
    }

    fn get(&self, path: &str, line: &Line, out: &mut dyn Write) -> R {
        let Some(group) = Self::config_group(path, line, out)? else {
            return Ok(());
        };
        let values = self.group_values(path, group)?;
        let names: Vec<String> = if line.pparams.len() > 1 {
            line.pparams[1..].to_vec()
        } else {
            Self::say(out, format!("{} CONFIG GROUP", group.to_uppercase()))?;
            values.keys().cloned().collect()
        };
        for n in names {
            let v = values
                .get(&n)
                .ok_or_else(|| Fail(format!("No parameter '{n}' in group '{group}'.")))?;
            Self::say(out, format!("{n}={v} "))?;
        }
        Ok(())
    }

    fn create(&mut self, path: &str, args: &BTreeMap<String, String>, out: &mut dyn Write) -> R {
        let a = |n: &str| args.get(n).cloned();
        let need = |n: &str| {
            args.get(n)
                .cloned()
                .ok_or_else(|| Fail(format!("Missing required parameter {n}")))
        };
        match kind(path)? {
            ObjectPath::Plugin(p) => {
                let name = need("name")?;
                let wwn = a("wwn");
                let kindb = match p {
                    Plugin::Fileio => {
                        let file = PathBuf::from(expand_user(&need("file_or_dev")?));
                        let size = a("size");
                        let write_back = opt_bool(args, "write_back", true)?;
                        let sparse = opt_bool(args, "sparse", true)?;
                        let meta = std::fs::metadata(&file).ok();
                        let is_blk = meta.as_ref().is_some_and(|m| {
                            use std::os::unix::fs::FileTypeExt;
                            m.file_type().is_block_device()
                        });
                        if is_blk {
                            if size.is_some() {
                                Self::say(out, "Block device, size parameter ignored")?;
                            }
                            Self::say(out, "Note: block backstore preferred for best results")?;
                        } else if let Some(m) = meta.as_ref().filter(|m| m.is_file() && m.len() > 0)
                        {
                            if size.is_some() {
                                Self::say(
                                    out,
                                    format!(
                                        "{} exists, using its size ({} bytes) instead",
                                        file.display(),
                                        m.len()
                                    ),
                                )?;
                            }
                        } else if meta.is_none() && size.is_none() {
                            return Err(Fail(
                                "Attempting to create file for new fileio backstore, need a size"
                                    .into(),
                            ));
                        }
                        BackstoreKind::Fileio {
                            name: name.clone(),
                            file,
                            size,
                            write_thru: !write_back,
                            no_sparse: !sparse,
                            aio: false,
                            wwn,
                        }
                    }
                    Plugin::Block => BackstoreKind::Block {
                        name: name.clone(),
                        dev: PathBuf::from(need("dev")?),
                        readonly: opt_bool(args, "readonly", false)?,
                        wwn,
                    },
                    Plugin::Ramdisk => BackstoreKind::Ramdisk {
                        name: name.clone(),
                        size: need("size")?,
                        nullio: opt_bool(args, "nullio", false)?,
                        wwn,
                    },
                    Plugin::Pscsi => BackstoreKind::Pscsi {
                        name: name.clone(),
                        dev: need("dev")?,
                    },
                    _ => return Err(Fail("Command not found create".into())),
                };
                self.quiet(|c| exec::create(c, CreateWhat::Backstore { kind: kindb }))?;
                let so_path = format!("{path}/{name}");
                if self.prefs.export_backstore_name_as_model {
                    let w = SetWhat::Attribute {
                        path: so_path.clone(),
                        settings: vec!["emulate_model_alias=1".into()],
                    };
                    self.quiet(|c| exec::set(c, w)).map_err(|_| {
                        Fail("'export_backstore_name_as_model' is set but emulate_model_alias\n  not supported by kernel.".into())
                    })?;
                }
                let cfg = self.dump()?;
                let so = cfg.storage_object(p.as_str(), &name);
                let msg = match p {
                    Plugin::Fileio => format!(
                        "Created fileio {name} with size {}",
                        so.and_then(|s| match s {
                            rustio_config::StorageObject::Fileio(f) => f.size,
                            _ => None,
                        })
                        .unwrap_or(0)
                    ),
                    Plugin::Block => format!(
                        "Created block storage object {name} using {}.",
                        so.and_then(|s| s.dev()).unwrap_or_default()
                    ),
                    Plugin::Ramdisk => {
                        format!("Created ramdisk {name} with size {}.", need("size")?)
                    }
                    _ => format!("Created pscsi storage object {name} using {}", need("dev")?),
                };
                Self::say(out, msg)?;
                self.created(so_path, out)
            }
            ObjectPath::AluaGroups(so) => {
                let name = need("name")?;
                let id = need("tag")?
                    .parse()
                    .map_err(|_| Fail("Tag argument must be a number.".into()))?;
                let w = CreateWhat::AluaGroup {
                    storage_object: so.to_string(),
                    name: name.clone(),
                    id,
                };
                self.quiet(|c| exec::create(c, w))?;
                Self::say(out, format!("Created ALUA TPG {name}."))
            }
            ObjectPath::Fabric(f) => self.create_target(&f, a("wwn"), out),
            ObjectPath::Target(t) => {
                let tag = match a("tag") {
                    Some(s) => Some(
                        s.trim_start_matches("tpg")
                            .parse::<u64>()
                            .map_err(|_| Fail("Tag argument must be a number.".into()))?,
                    ),
                    None => None,
                };
                let before = self.tpg_tags(&t)?;
                let w = CreateWhat::Tpg {
                    target: t.to_string(),
                    tag,
                    no_portal: !self.prefs.auto_add_default_portal,
                    disabled: !self.prefs.auto_enable_tpgt,
                };
                self.quiet(|c| exec::create(c, w))?;
                let new = self
                    .tpg_tags(&t)?
                    .into_iter()
                    .find(|x| !before.contains(x))
                    .unwrap_or(0);
                Self::say(out, format!("Created TPG {new}."))?;
                self.portal_notes(
                    &crate::TpgRef {
                        target: t.clone(),
                        tag: new,
                    },
                    out,
                )?;
                self.created(format!("{t}/tpg{new}"), out)
            }
            ObjectPath::Luns(t) => {
                let so_path = self
                    .resolve(&need("storage_object")?)
                    .map_err(|_| Fail("storage object or path not valid".into()))?;
                let Ok(ObjectPath::StorageObject(so)) = kind(&so_path) else {
                    return Err(Fail("storage object or path not valid".into()));
                };
                let live = self.dump()?;
                let g = live
                    .target(&t.target.fabric, &t.target.wwn)
                    .and_then(|x| x.tpgs.iter().find(|g| g.tag == Some(t.tag)));
                if g.is_some_and(|g| g.luns.iter().any(|l| l.storage_object == so_path)) {
                    return Err(Fail(format!(
                        "lun for storage object {}/{} already exists",
                        so.plugin, so.name
                    )));
                }
                let lun = match a("lun") {
                    Some(l) => Some(
                        parse_lun_component(&l.to_ascii_lowercase())
                            .ok_or_else(|| Fail(format!("Invalid LUN {l}")))?,
                    ),
                    None => None,
                };
                let map = opt_bool(args, "add_mapped_luns", self.prefs.auto_add_mapped_luns)?;
                let w = CreateWhat::Lun {
                    tpg: t.to_string(),
                    storage_object: so_path,
                    lun,
                    alias: None,
                    no_mapped_luns: !map,
                };
                // exec prints targetcli's own lines here ("Created LUN 0.", "Created LUN 0->0 mapping in node ACL ...").
                let said = self.quiet(|c| exec::create(c, w))?;
                out.write_all(said.as_bytes())
                    .map_err(|e| Fail(e.to_string()))?;
                let idx = said
                    .split_whitespace()
                    .nth(2)
                    .map(|s| s.trim_end_matches('.'))
                    .unwrap_or("0")
                    .to_owned();
                self.created(format!("{t}/luns/lun{idx}"), out)
            }
            ObjectPath::Acls(t) => {
                let wwn = need("wwn")?;
                let map = opt_bool(args, "add_mapped_luns", self.prefs.auto_add_mapped_luns)?;
                let w = CreateWhat::Acl {
                    tpg: t.to_string(),
                    wwn: wwn.clone(),
                    no_mapped_luns: !map,
                };
                self.quiet(|c| exec::create(c, w))?;
                let cfg = self.dump()?;
                let acl = cfg
                    .target(&t.target.fabric, &t.target.wwn)
                    .and_then(|x| x.tpgs.iter().find(|g| g.tag == Some(t.tag)))
                    .and_then(|g| {
                        g.node_acls
                            .iter()
                            .find(|a| a.node_wwn.eq_ignore_ascii_case(&wwn))
                    });
                let name = acl.map(|a| a.node_wwn.clone()).unwrap_or(wwn);
                Self::say(out, format!("Created Node ACL for {name}"))?;
                for m in acl.map(|a| a.mapped_luns.as_slice()).unwrap_or(&[]) {
                    Self::say(out, format!("Created mapped LUN {}.", m.index))?;
                }
                self.created(format!("{t}/acls/{name}"), out)
            }
            ObjectPath::Acl(acl) => {
                let mapped: u64 = need("mapped_lun")?
                    .parse()
                    .map_err(|_| Fail("mapped_lun must be an integer".into()))?;
                let spec = need("tpg_lun_or_backstore")?;
                let wp = match a("write_protect") {
                    Some(v) => {
                        matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
                    }
                    None => false,
                };
                let tpg_lun = match parse_lun_component(&spec.to_ascii_lowercase()) {
                    Some(n) => n,
                    None => self.lun_for_backstore(&acl.tpg, &spec, out)?,
                };
                let w = CreateWhat::MappedLun {
                    acl: acl.to_string(),
                    mapped_lun: mapped,
                    tpg_lun: tpg_lun.to_string(),
                    write_protect: wp,
                };
                self.quiet(|c| exec::create(c, w))?;
                Self::say(out, format!("Created Mapped LUN {mapped}."))?;
                self.created(format!("{acl}/mapped_lun{mapped}"), out)
            }
            ObjectPath::Portals(t) => {
                let ip = a("ip_address").unwrap_or_else(|| DEFAULT_PORTAL.into());
                let port: u64 = match a("ip_port") {
                    Some(p) => p
                        .parse()
                        .map_err(|_| Fail(format!("Syntax error, '{p}' is not a NUMBER.")))?,
                    None => DEFAULT_PORT,
                };
                if port == DEFAULT_PORT {
                    Self::say(out, format!("Using default IP port {port}"))?;
                }
                if ip == DEFAULT_PORTAL {
                    Self::say(out, format!("Binding to INADDR_ANY ({DEFAULT_PORTAL})"))?;
                }
                let dir = if ip.contains('.') {
                    ip.clone()
                } else {
                    format!("[{ip}]")
                };
                let exists = self
                    .dump()?
                    .target(&t.target.fabric, &t.target.wwn)
                    .and_then(|x| x.tpgs.iter().find(|g| g.tag == Some(t.tag)))
                    .is_some_and(|g| {
                        g.portals
                            .iter()
                            .any(|p| p.ip_address == dir && p.port == port)
                    });
                if exists && args.is_empty() {
                    // The TPG got this portal when it was created (auto_add_default_portal):
                    // scripts written for targetcli versions without that preference run on.
                    return Self::say(out, format!("Default portal {dir}:{port} already exists (global auto_add_default_portal=true)."));
                }
                let w = CreateWhat::Portal {
                    tpg: t.to_string(),
                    ip: dir.clone(),
                    port,
                    iser: false,
                };
                self.quiet(|c| exec::create(c, w))?;
                Self::say(out, format!("Created network portal {ip}:{port}."))?;
                self.created(format!("{t}/portals/{dir}:{port}"), out)
            }
            _ => Err(Fail("Command not found create".into())),
        }
    }

    /// The TPG LUN exporting `spec` (a storage object path), created when there is none
    /// (targetcli `UINodeACL.ui_command_create`).
    fn lun_for_backstore(&self, tpg: &crate::TpgRef, spec: &str, out: &mut dyn Write) -> R<u64> {
        let so_path = self
            .resolve(spec)
            .map_err(|_| Fail("LUN, storage object, or path not valid".into()))?;
        if !matches!(kind(&so_path), Ok(ObjectPath::StorageObject(_))) {
            return Err(Fail("LUN, storage object, or path not valid".into()));
        }
        let find = |cfg: &SaveConfig| {
            cfg.target(&tpg.target.fabric, &tpg.target.wwn)
                .and_then(|x| x.tpgs.iter().find(|g| g.tag == Some(tpg.tag)))
                .and_then(|g| g.luns.iter().find(|l| l.storage_object == so_path))
                .map(|l| l.index)
        };
        if let Some(i) = find(&self.dump()?) {
            return Ok(i);
        }
        let w = CreateWhat::Lun {
            tpg: tpg.to_string(),
            storage_object: so_path.clone(),
            lun: None,
            alias: None,
            no_mapped_luns: true,
        };
        self.quiet(|c| exec::create(c, w))?;
        let i = find(&self.dump()?).unwrap_or(0);
        Self::say(out, format!("Created LUN {i}."))?;
        Ok(i)
    }

    fn tpg_tags(&self, t: &crate::TargetRef) -> R<Vec<u64>> {
        Ok(self
            .dump()?
            .target(&t.fabric, &t.wwn)
            .map(|x| x.tpgs.iter().filter_map(|g| g.tag).collect())
            .unwrap_or_default())
    }

    /// targetcli's lines about the default portal of a new TPG.
    fn portal_notes(&self, t: &crate::TpgRef, out: &mut dyn Write) -> R {
        if !self.prefs.auto_add_default_portal
            || !fabric_info(&t.target.fabric).is_some_and(|i| i.nps)
        {
            return Ok(());
        }
        let has = self
            .dump()?
            .target(&t.target.fabric, &t.target.wwn)
            .and_then(|x| x.tpgs.iter().find(|g| g.tag == Some(t.tag)))
            .is_some_and(|g| {
                g.portals
                    .iter()
                    .any(|p| p.ip_address == "[::0]" && p.port == DEFAULT_PORT)
            });
        if has {
            Self::say(out, "Global pref auto_add_default_portal=true")?;
            Self::say(out, format!("Created default portal listening on all IPs ({DEFAULT_PORTAL}), port {DEFAULT_PORT}."))
        } else {
            Self::say(
                out,
                "Default portal not created, TPGs within a target cannot share ip:port.",
            )
        }
    }

    fn create_target(&mut self, fabric: &str, wwn: Option<String>, out: &mut dyn Write) -> R {
        let info = fabric_info(fabric).ok_or_else(|| Fail("Command not found create".into()))?;
        let before: Vec<String> = self
            .dump()?
            .targets
            .iter()
            .filter(|t| t.fabric == fabric)
            .map(|t| t.wwn.clone())
            .collect();
        // Without auto_enable_tpgt, TPG 1 is made separately, disabled.
        let tpg_now = self.prefs.auto_enable_tpgt || !info.tpgts;
        let w = CreateWhat::Target {
            wwn,
            fabric: fabric.to_owned(),
            no_tpg: !tpg_now,
            no_portal: !self.prefs.auto_add_default_portal,
        };
        self.quiet(|c| exec::create(c, w))?;
        let wwn = self
            .dump()?
            .targets
            .iter()
            .filter(|t| t.fabric == fabric)
            .map(|t| t.wwn.clone())
            .find(|w| !before.contains(w))
            .unwrap_or_default();
        let target = crate::TargetRef {
            fabric: fabric.to_owned(),
            wwn: wwn.clone(),
        };
        Self::say(out, format!("Created target {wwn}."))?;
        if !tpg_now {
            let w = CreateWhat::Tpg {
                target: target.to_string(),
                tag: Some(1),
                no_portal: !self.prefs.auto_add_default_portal,
                disabled: true,
            };
            self.quiet(|c| exec::create(c, w))?;
        }
        if info.tpgts {
            Self::say(out, "Created TPG 1.")?;
            self.portal_notes(
                &crate::TpgRef {
                    target: target.clone(),
                    tag: 1,
                },
                out,
            )?;
        }
        self.created(target.to_string(), out)
    }

    fn delete(&mut self, path: &str, args: &BTreeMap<String, String>, out: &mut dyn Write) -> R {
        let a = |n: &str| args.get(n).cloned().unwrap_or_default();
        let (victim, msg) = match kind(path)? {
            ObjectPath::Plugin(_) => (
                format!("{path}/{}", a("name")),
                format!("Deleted storage object {}.", a("name")),
            ),
            ObjectPath::AluaGroups(_) => (
                format!("{path}/{}", a("name")),
                format!("Deleted ALUA TPG {}.", a("name")),
            ),
            ObjectPath::Fabric(_) => (
                format!("{path}/{}", a("wwn")),
                format!("Deleted Target {}.", a("wwn")),
            ),
            ObjectPath::Target(_) => {
                let tag = a("tag");
                let n = tag.trim_start_matches("tpg");
                n.parse::<u64>()
                    .map_err(|_| Fail("Tag argument must be a number.".into()))?;
                (format!("{path}/tpg{n}"), format!("Deleted TPGT {n}."))
            }
            ObjectPath::Luns(_) => {
                let l = a("lun");
                let n = parse_lun_component(&l.to_ascii_lowercase())
                    .ok_or_else(|| Fail("Invalid LUN".into()))?;
                (format!("{path}/lun{n}"), format!("Deleted LUN {n}."))
            }
            ObjectPath::Acls(_) => (
                format!("{path}/{}", a("wwn")),
                format!("Deleted Node ACL {}.", a("wwn")),
            ),
            ObjectPath::Acl(_) => {
                let m = a("mapped_lun");
                (
                    format!("{path}/mapped_lun{m}"),
                    format!("Deleted Mapped LUN {m}."),
                )
            }
            ObjectPath::Portals(_) => {
                let ip = a("ip_address");
                let dir = if ip.contains('.') {
                    ip.clone()
                } else {
                    format!("[{}]", ip.trim_start_matches('[').trim_end_matches(']'))
                };
                (
                    format!("{path}/{dir}:{}", a("ip_port")),
                    format!("Deleted network portal {ip}:{}", a("ip_port")),
                )
            }
            _ => return Err(Fail("Command not found delete".into())),
        };
        let d = DeleteArgs {
            path: victim.clone(),
            force: true,
            global: Default::default(),
        };
        self.quiet(|c| exec::delete(c, &d))?;
        if self.cwd == victim || self.cwd.starts_with(&format!("{victim}/")) {
            self.cwd = path.to_owned();
        }
        Self::say(out, msg)
    }
}

/// `~` and `~/...` as the user's home (targetcli `os.path.expanduser`).
fn expand_user(p: &str) -> String {
    match (p.strip_prefix('~'), std::env::var_os("HOME")) {
        (Some(rest), Some(h)) if rest.is_empty() || rest.starts_with('/') => {
            format!("{}{rest}", Path::new(&h).display())
        }
        _ => p.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(pp: &[&str], kp: &[(&str, &str)]) -> Line {
        Line {
            path: None,
            command: Some("create".into()),
            pparams: pp.iter().map(|s| (*s).to_owned()).collect(),
            kparams: kp
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn parameters_bind_like_configshell_assert_params() {
        let sig = "create name file_or_dev [size] [write_back] [sparse] [wwn]";
        let b = bind(
            sig,
            &line(&["disk1", "/srv/d.img", "1G"], &[("write_back", "false")]),
        )
        .unwrap();
        assert_eq!(b["name"], "disk1");
        assert_eq!(b["size"], "1G");
        assert_eq!(b["write_back"], "false");
        // Keyword form of a positional parameter.
        let b = bind(sig, &line(&["disk1"], &[("file_or_dev", "/f")])).unwrap();
        assert_eq!(b["file_or_dev"], "/f");
        assert_eq!(
            bind(sig, &line(&["disk1"], &[])),
            Err(Fail("Missing required parameter file_or_dev".into()))
        );
        assert_eq!(
            bind(sig, &line(&["d", "/f"], &[("bogus", "1")])),
            Err(Fail("Unexpected keyword parameter 'bogus'.".into()))
        );
        assert_eq!(
            bind(sig, &line(&["d", "/f"], &[("name", "x")])),
            Err(Fail("Duplicate parameter name.".into()))
        );
        assert_eq!(
            bind("create [wwn]", &line(&["a", "b"], &[])),
            Err(Fail(
                "Got 2 positionnal parameters, expected at most 1.".into()
            ))
        );
    }

    #[test]
    fn nodes_have_targetclis_commands_and_groups() {
        let fio = commands("/backstores/fileio");
        assert!(fio.contains(&"create name file_or_dev [size] [write_back] [sparse] [wwn]"));
        assert!(commands("/").contains(&"saveconfig [savefile]"));
        assert!(!commands("/iscsi")
            .iter()
            .any(|c| c.starts_with("saveconfig")));
        assert_eq!(groups("/iscsi"), ["global", "discovery_auth"]);
        assert_eq!(
            groups("/iscsi/iqn.2003-01.org.x:t/tpg1"),
            ["global", "attribute", "auth", "parameter"]
        );
    }

    #[test]
    fn prefs_default_to_targetclis_and_refuse_bad_values() {
        let mut p = Prefs::default();
        assert!(p.auto_save_on_exit && p.auto_add_default_portal && p.auto_add_mapped_luns);
        assert!(!p.auto_cd_after_create);
        p.set("auto_save_on_exit", "False").unwrap();
        assert!(!p.auto_save_on_exit);
        assert!(p.set("auto_save_on_exit", "0").is_err());
        assert!(p.set("nope", "1").is_err());
    }
}
