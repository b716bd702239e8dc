//! `rustio ls` and `rustio sessions`: targetcli-style tree rendering.

use std::collections::BTreeMap;

use rustio_config::fabric::{fabric_info, MANAGED_FABRICS};
use rustio_config::{ConfigValue, StorageObject};
use serde_json::Value;

use super::exec::Ctx;
use super::{out_err, LsArgs, SessionsArgs};
use crate::addr::ObjectPath;
use crate::error::{Error, Result};
use crate::human::format_size;
use crate::read::{LiveStorageObject, LiveTpg, LiveTree};

/// One line of the tree.
#[derive(Debug, Clone)]
struct Node {
    name: String,
    summary: String,
    path: String,
    json: Value,
    children: Vec<Node>,
}

fn node(name: impl Into<String>, summary: impl Into<String>, path: String, json: Value) -> Node {
    Node {
        name: name.into(),
        summary: summary.into(),
        path,
        json,
        children: Vec::new(),
    }
}

const ALUA_STATES: [(u64, &str); 7] = [
    (0, "Active/optimized"),
    (1, "Active/non-optimized"),
    (2, "Standby"),
    (3, "Unavailable"),
    (4, "LBA Dependent"),
    (14, "Offline"),
    (15, "Transitioning"),
];

fn so_summary(so: &LiveStorageObject) -> String {
    let size = so.size.map(format_size);
    let wb = |attrs: &BTreeMap<String, ConfigValue>| {
        if attrs
            .get("emulate_write_cache")
            .is_some_and(|v| v.to_configfs() == "1")
        {
            "write-back"
        } else {
            "write-thru"
        }
    };
    match &so.config {
        StorageObject::Fileio(f) => format!(
            "{} ({}) {} {}",
            f.dev,
            size.unwrap_or_default(),
            wb(&f.common.attributes),
            so.status
        ),
        StorageObject::Block(b) => format!(
            "{} ({}) {}{} {}",
            b.dev,
            size.unwrap_or_else(|| "?".into()),
            if b.readonly == Some(true) { "ro " } else { "" },
            wb(&b.common.attributes),
            so.status
        ),
        StorageObject::Ramdisk(r) => format!(
            "{}({}) {}",
            if r.nullio == Some(true) {
                "nullio "
            } else {
                ""
            },
            format_size(r.size),
            so.status
        ),
        StorageObject::Pscsi(p) => format!("{} {}", p.dev, so.status),
        StorageObject::User(u) => format!(
            "{} ({}) {}",
            u.config.as_deref().unwrap_or("(no config)"),
            size.unwrap_or_default(),
            so.status
        ),
        StorageObject::Other(_) => so.status.clone(),
    }
}

fn attr_is(g: &LiveTpg, name: &str, v: &str) -> bool {
    g.config
        .attributes
        .get(name)
        .is_some_and(|x| x.to_configfs() == v)
}

fn tpg_summary(g: &LiveTpg, fabric: &str) -> (String, bool) {
    let info = fabric_info(fabric);
    let mut msg = Vec::new();
    if let Some(n) = &g.config.nexus {
        msg.push(n.clone());
    }
    if g.config.enable == Some(false) {
        return ("disabled".into(), false);
    }
    if info.is_some_and(|i| i.acls) {
        let gen = attr_is(g, "generate_node_acls", "1");
        msg.push(if gen { "gen-acls" } else { "no-gen-acls" }.into());
        if info.is_some_and(|i| i.auth) {
            if attr_is(g, "authentication", "0") {
                msg.push("no-auth".into());
            } else if !gen {
                msg.push("auth per-acl".into());
            } else {
                msg.push("tpg-auth".into());
                msg.push(
                    if g.authenticate_target == Some(true) {
                        "mutual auth"
                    } else {
                        "1-way auth"
                    }
                    .into(),
                );
            }
        }
    }
    (msg.join(", "), true)
}

fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn build(tree: &LiveTree) -> Node {
    let mut root = node("/", "...", "/".into(), json(tree));
    root.children.push(backstores_node(tree));
    let mut fabric_names: Vec<String> = MANAGED_FABRICS.iter().map(|f| f.name.to_owned()).collect();
    for f in &tree.fabrics {
        if !fabric_names.contains(&f.name) {
            fabric_names.push(f.name.clone());
        }
    }
    for fname in fabric_names {
        root.children.push(fabric_node(tree, &fname));
    }
    root
}

/// `/backstores`: one node per known plugin, its storage objects below.
fn backstores_node(tree: &LiveTree) -> Node {
    let mut bs = node(
        "backstores",
        "...",
        "/backstores".into(),
        json(&tree.storage_objects),
    );
    for plugin in rustio_config::Plugin::KNOWN {
        let objs: Vec<&LiveStorageObject> = tree
            .storage_objects
            .iter()
            .filter(|s| s.config.plugin() == plugin)
            .collect();
        let ppath = format!("/backstores/{plugin}");
        let mut pn = node(
            plugin.as_str(),
            format!("Storage Objects: {}", objs.len()),
            ppath.clone(),
            json(&objs),
        );
        for so in objs {
            pn.children.push(storage_object_node(so));
        }
        bs.children.push(pn);
    }
    bs
}

fn storage_object_node(so: &LiveStorageObject) -> Node {
    let spath = so.config.path();
    let mut sn = node(so.config.name(), so_summary(so), spath.clone(), json(so));
    let Some(c) = so.config.common().filter(|c| !c.alua_tpgs.is_empty()) else {
        return sn;
    };
    let mut an = node(
        "alua",
        format!("ALUA Groups: {}", c.alua_tpgs.len()),
        format!("{spath}/alua"),
        json(&c.alua_tpgs),
    );
    for g in &c.alua_tpgs {
        // SPC-4 6.37 REPORT TARGET PORT GROUPS, asymmetric access state.
        let state = g
            .alua_access_state
            .and_then(|s| ALUA_STATES.iter().find(|(n, _)| *n == s))
            .map(|(_, w)| *w)
            .unwrap_or("?");
        an.children.push(node(
            g.name.clone(),
            format!("ALUA state: {state}"),
            format!("{spath}/alua/{}", g.name),
            json(g),
        ));
    }
    sn.children.push(an);
    sn
}

/// `/<fabric>`: discovery authentication and the targets.
fn fabric_node(tree: &LiveTree, fname: &str) -> Node {
    let fabric = tree.fabric(fname);
    let targets = fabric.map(|f| f.targets.as_slice()).unwrap_or(&[]);
    let mut msg = Vec::new();
    if let Some(d) = fabric
        .and_then(|f| f.discovery.as_ref())
        .filter(|d| d.enforce)
    {
        msg.push(
            if d.authenticate_target {
                "mutual disc auth"
            } else {
                "1-way disc auth"
            }
            .to_owned(),
        );
    }
    msg.push(format!("Targets: {}", targets.len()));
    let fpath = format!("/{fname}");
    let mut fnode = node(
        fname.to_owned(),
        msg.join(", "),
        fpath.clone(),
        json(&fabric),
    );
    for t in targets {
        let tpath = format!("{fpath}/{}", t.wwn);
        let mut tn = node(
            t.wwn.clone(),
            format!("TPGs: {}", t.tpgs.len()),
            tpath.clone(),
            json(t),
        );
        for g in &t.tpgs {
            tn.children.push(tpg_node(tree, fname, &tpath, g));
        }
        fnode.children.push(tn);
    }
    fnode
}

/// `.../tpg<N>`: ACLs (when the fabric has them), LUNs, portals (when it has them).
fn tpg_node(tree: &LiveTree, fname: &str, tpath: &str, g: &LiveTpg) -> Node {
    let tag = g.config.tag.unwrap_or(0);
    let gpath = format!("{tpath}/tpg{tag}");
    let (summary, _) = tpg_summary(g, fname);
    let mut gn = node(format!("tpg{tag}"), summary, gpath.clone(), json(g));
    let info = fabric_info(fname);
    if !matches!(info, Some(i) if !i.acls) {
        let with_auth = info.is_some_and(|i| i.auth);
        gn.children.push(acls_node(g, &gpath, with_auth));
    }
    gn.children.push(luns_node(tree, g, &gpath));
    if !matches!(info, Some(i) if !i.nps) {
        gn.children.push(portals_node(g, &gpath));
    }
    gn
}

fn acls_node(g: &LiveTpg, gpath: &str, with_auth: bool) -> Node {
    let luns_by_index: BTreeMap<u64, &rustio_config::Lun> =
        g.config.luns.iter().map(|l| (l.index, l)).collect();
    let mut an = node(
        "acls",
        format!("ACLs: {}", g.config.node_acls.len()),
        format!("{gpath}/acls"),
        json(&g.config.node_acls),
    );
    for a in &g.config.node_acls {
        let apath = format!("{gpath}/acls/{}", a.node_wwn);
        let mut msg = Vec::new();
        if with_auth && !attr_is(g, "authentication", "0") {
            if attr_is(g, "generate_node_acls", "1") {
                msg.push("auth via tpg".to_owned());
            } else if g.acl_mutual.get(&a.node_wwn) == Some(&true) {
                msg.push("mutual auth".to_owned());
            } else {
                msg.push("1-way auth".to_owned());
            }
        }
        msg.push(format!("Mapped LUNs: {}", a.mapped_luns.len()));
        let mut acl_node = node(a.node_wwn.clone(), msg.join(", "), apath.clone(), json(a));
        for m in &a.mapped_luns {
            acl_node
                .children
                .push(mapped_lun_node(m, &apath, &luns_by_index));
        }
        an.children.push(acl_node);
    }
    an
}

fn mapped_lun_node(
    m: &rustio_config::MappedLun,
    apath: &str,
    luns_by_index: &BTreeMap<u64, &rustio_config::Lun>,
) -> Node {
    let target = luns_by_index
        .get(&m.tpg_lun)
        .map(|l| {
            l.storage_object
                .trim_start_matches("/backstores/")
                .to_owned()
        })
        .unwrap_or_else(|| "BROKEN LUN LINK".into());
    let mode = if m.write_protect == Some(true) {
        "ro"
    } else {
        "rw"
    };
    node(
        format!("mapped_lun{}", m.index),
        format!("lun{} {target} ({mode})", m.tpg_lun),
        format!("{apath}/mapped_lun{}", m.index),
        json(m),
    )
}

fn luns_node(tree: &LiveTree, g: &LiveTpg, gpath: &str) -> Node {
    let mut ln = node(
        "luns",
        format!("LUNs: {}", g.config.luns.len()),
        format!("{gpath}/luns"),
        json(&g.config.luns),
    );
    for l in &g.config.luns {
        let so = tree
            .storage_objects
            .iter()
            .find(|s| s.config.path() == l.storage_object);
        let mut d = l
            .storage_object
            .trim_start_matches("/backstores/")
            .to_owned();
        if let Some(dev) = so.and_then(|s| s.config.dev()) {
            d.push_str(&format!(" ({dev})"));
        }
        if let Some(grp) = &l.alua_tg_pt_gp_name {
            d.push_str(&format!(" ({grp})"));
        }
        ln.children.push(node(
            format!("lun{}", l.index),
            d,
            format!("{gpath}/luns/lun{}", l.index),
            json(l),
        ));
    }
    ln
}

fn portals_node(g: &LiveTpg, gpath: &str) -> Node {
    let mut pn = node(
        "portals",
        format!("Portals: {}", g.config.portals.len()),
        format!("{gpath}/portals"),
        json(&g.config.portals),
    );
    for p in &g.config.portals {
        let s = if p.iser == Some(true) {
            "iser"
        } else if p.offload == Some(true) {
            "offload"
        } else {
            "OK"
        };
        pn.children.push(node(
            p.dir_name(),
            s,
            format!("{gpath}/portals/{}", p.dir_name()),
            json(p),
        ));
    }
    pn
}

const WIDTH: usize = 100;

fn line(n: &Node, prefix: &str) -> String {
    let left = format!("{prefix}o- {}", n.name);
    let right = format!("[{}]", n.summary);
    let used = left.chars().count() + right.chars().count() + 2;
    let dots = WIDTH.saturating_sub(used).max(3);
    format!("{left} {} {right}", ".".repeat(dots))
}

/// Renders `n` as the top of the listing, its children indented like configshell.
fn render(n: &Node, out: &mut Vec<String>) {
    out.push(line(n, ""));
    let count = n.children.len();
    for (i, c) in n.children.iter().enumerate() {
        render_child(c, "  ", i + 1 == count, out);
    }
}

fn render_child(n: &Node, prefix: &str, last: bool, out: &mut Vec<String>) {
    out.push(line(n, prefix));
    // The vertical bar continues under a node while it has later siblings.
    let next = format!("{prefix}{}", if last { "  " } else { "| " });
    let count = n.children.len();
    for (i, c) in n.children.iter().enumerate() {
        render_child(c, &next, i + 1 == count, out);
    }
}

fn find<'a>(n: &'a Node, path: &str) -> Option<&'a Node> {
    if n.path == path {
        return Some(n);
    }
    n.children.iter().find_map(|c| find(c, path))
}

fn flatten(n: &Node, out: &mut Vec<(String, Value)>) {
    out.push((n.path.clone(), n.json.clone()));
    for c in &n.children {
        flatten(c, out);
    }
}

/// Every node `ls` shows: its path and JSON, parents before children (the targetcli
/// shell walks and completes paths over this list).
pub(crate) fn node_list(tree: &LiveTree) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    flatten(&build(tree), &mut out);
    out
}

/// Renders the tree at `path` (targetcli `ls` layout).
pub(crate) fn render_tree(tree: &LiveTree, path: &ObjectPath) -> Result<Vec<String>> {
    let root = build(tree);
    let key = path.to_string();
    let n = find(&root, &key).ok_or_else(|| Error::NotFound {
        what: "object",
        name: key.clone(),
    })?;
    let mut out = Vec::new();
    render(n, &mut out);
    Ok(out)
}

/// Version of the `--json` documents of `ls` and `sessions` (docs/lio.md, "Machine
/// interface"): raised when a field is removed or changes meaning; new fields may appear
/// without a change.
pub const JSON_SCHEMA: u32 = 1;

pub(crate) fn ls(ctx: &mut Ctx<'_>, args: &LsArgs) -> Result<()> {
    let path: ObjectPath = args.path.parse()?;
    let tree = ctx.lio.live()?;
    if args.json {
        let root = build(&tree);
        let key = path.to_string();
        let n = find(&root, &key).ok_or_else(|| Error::NotFound {
            what: "object",
            name: key.clone(),
        })?;
        let doc = serde_json::json!({
            "schema": JSON_SCHEMA,
            "kind": "ls",
            "path": key,
            "object": n.json,
        });
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        writeln!(ctx.out, "{text}").map_err(out_err)?;
        return Ok(());
    }
    for line in render_tree(&tree, &path)? {
        writeln!(ctx.out, "{line}").map_err(out_err)?;
    }
    Ok(())
}

/// One session to show: TPG path, session, demo-mode (no ACL), its TPG.
type SessionRow<'a> = (String, crate::sessions::Session, bool, &'a LiveTpg);

/// Every open session, ACL sessions of a TPG before its demo-mode ones.
fn session_rows(tree: &LiveTree) -> Vec<SessionRow<'_>> {
    let mut rows = Vec::new();
    for f in &tree.fabrics {
        for t in &f.targets {
            for g in &t.tpgs {
                let tpg_path = format!("/{}/{}/tpg{}", f.name, t.wwn, g.config.tag.unwrap_or(0));
                for s in &g.sessions {
                    rows.push((tpg_path.clone(), s.clone(), false, g));
                }
                for d in &g.dynamic_sessions {
                    let s = crate::sessions::Session {
                        initiator: d.clone(),
                        ..Default::default()
                    };
                    rows.push((tpg_path.clone(), s, true, g));
                }
            }
        }
    }
    rows
}

pub(crate) fn sessions(ctx: &mut Ctx<'_>, args: &SessionsArgs) -> Result<()> {
    let tree = ctx.lio.live()?;
    let rows = session_rows(&tree);
    if args.json {
        let v: Vec<Value> = rows
            .iter()
            .map(|(tpg, s, dynamic, _)| serde_json::json!({"tpg": tpg, "dynamic": dynamic, "session": s}))
            .collect();
        let doc = serde_json::json!({"schema": JSON_SCHEMA, "kind": "sessions", "sessions": v});
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        writeln!(ctx.out, "{text}").map_err(out_err)?;
        return Ok(());
    }
    if rows.is_empty() {
        writeln!(ctx.out, "(no open sessions)").map_err(out_err)?;
        return Ok(());
    }
    for (tpg, s, dynamic, g) in rows {
        let line = if dynamic {
            format!("{tpg}: {} (demo-mode, no ACL)", s.initiator)
        } else {
            format!(
                "alias: {}\tsid: {} type: {} session-state: {}  [{tpg}]",
                s.alias.as_deref().unwrap_or(""),
                s.sid.map(|x| x.to_string()).unwrap_or_else(|| "?".into()),
                s.session_type.as_deref().unwrap_or("?"),
                s.state.as_deref().unwrap_or("?")
            )
        };
        writeln!(ctx.out, "{line}").map_err(out_err)?;
        if args.detail && !dynamic {
            session_detail(ctx, &s, g)?;
        }
    }
    Ok(())
}

/// `sessions --detail`: the initiator, its mapped LUNs and its connections.
fn session_detail(ctx: &mut Ctx<'_>, s: &crate::sessions::Session, g: &LiveTpg) -> Result<()> {
    let auth = if g.acl_mutual.get(&s.initiator) == Some(&true) {
        " (mutual auth)"
    } else {
        ""
    };
    writeln!(ctx.out, "    name: {}{auth}", s.initiator).map_err(out_err)?;
    if let Some(acl) = g
        .config
        .node_acls
        .iter()
        .find(|a| a.node_wwn == s.initiator)
    {
        for m in &acl.mapped_luns {
            let so = g
                .config
                .luns
                .iter()
                .find(|l| l.index == m.tpg_lun)
                .map(|l| {
                    l.storage_object
                        .trim_start_matches("/backstores/")
                        .to_owned()
                })
                .unwrap_or_default();
            let mode = if m.write_protect == Some(true) {
                "r"
            } else {
                "rw"
            };
            writeln!(
                ctx.out,
                "    mapped-lun: {} backstore: {so} mode: {mode}",
                m.index
            )
            .map_err(out_err)?;
        }
    }
    for c in &s.connections {
        writeln!(
            ctx.out,
            "    address: {} ({})  cid: {} connection-state: {}",
            c.address.as_deref().unwrap_or("?"),
            c.transport.as_deref().unwrap_or("?"),
            c.cid,
            c.state
        )
        .map_err(out_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_luns_show_their_backstore_and_mode() {
        let lun: rustio_config::Lun =
            serde_json::from_str(r#"{"index": 3, "storage_object": "/backstores/fileio/d"}"#)
                .expect("test LUN parses");
        let luns: BTreeMap<u64, &rustio_config::Lun> = [(3, &lun)].into_iter().collect();
        let m: rustio_config::MappedLun =
            serde_json::from_str(r#"{"index": 0, "tpg_lun": 3, "write_protect": true}"#)
                .expect("test mapped LUN parses");
        let n = mapped_lun_node(&m, "/iscsi/t/tpg1/acls/i", &luns);
        assert_eq!(n.name, "mapped_lun0");
        assert_eq!(n.summary, "lun3 fileio/d (ro)");
        assert_eq!(n.path, "/iscsi/t/tpg1/acls/i/mapped_lun0");
        let dangling: rustio_config::MappedLun =
            serde_json::from_str(r#"{"index": 1, "tpg_lun": 9}"#).expect("parses");
        let n = mapped_lun_node(&dangling, "/a", &luns);
        assert_eq!(n.summary, "lun9 BROKEN LUN LINK (rw)");
    }
}
