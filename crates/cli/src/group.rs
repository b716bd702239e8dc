//! `rustio group push|show|pull`: one configuration for a whole gateway group, kept in
//! a RADOS object every `rustio serve --group` watches (docs/ceph.md, "One
//! configuration for the whole group"; the object format is
//! `rustio_rbd::groupconf`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rustio_config::SaveConfig;
use rustio_iscsi::config::ServerConfig;
use rustio_iscsi::saveconfig::group::GatewayGroup;
use rustio_rbd::groupconf::{
    now_ms, AppliedRecord, GroupConfig, GroupConfigStore, GroupEventFn, Outcome,
};
use rustio_rbd::{OpenOptions, RbdConfig};

/// `"schema"` of `rustio group show --json` (the listing commands' envelope).
pub const GROUP_JSON_SCHEMA: u32 = rustio_lio::cli::JSON_SCHEMA;

/// How often `push --wait` reads the gateways' applied records.
const WAIT_POLL: Duration = Duration::from_millis(200);

/// Bound on connecting to the cluster.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// `rustio group …`.
#[derive(Debug, clap::Subcommand)]
pub enum GroupCommand {
    /// Validate a saveconfig.json with a `rustio_gateway_group` section and store it as
    /// the group's next configuration version; every `rustio serve --group` gateway
    /// applies it.
    Push(PushArgs),
    /// Show the group's current version, each gateway's applied version and result, and
    /// the configuration.
    Show(ShowArgs),
    /// Write the group's current configuration to a file.
    Pull(PullArgs),
}

/// Where the group's object lives and how to reach the cluster.
#[derive(Debug, Clone, clap::Args)]
pub struct CephArgs {
    /// RADOS pool holding the group's object `rustio.group.<name>`.
    #[arg(long, value_name = "POOL")]
    pub pool: String,
    /// Ceph configuration file (default: librados' search: $CEPH_CONF,
    /// /etc/ceph/ceph.conf, ~/.ceph/config, ./ceph.conf).
    #[arg(long, value_name = "PATH")]
    pub ceph_conf: Option<PathBuf>,
    /// Ceph user without the `client.` prefix (the rbd engine's `id=` option; default
    /// admin).
    #[arg(long, value_name = "USER")]
    pub id: Option<String>,
}

impl CephArgs {
    /// Opens group `name`'s object with these arguments.
    fn store(&self, name: &str) -> anyhow::Result<GroupConfigStore> {
        open_store(
            &self.pool,
            self.ceph_conf.as_deref(),
            self.id.as_deref(),
            name,
        )
    }
}

/// Arguments of `rustio group push`.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The group's saveconfig.json (with `rustio_gateway_group`).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub ceph: CephArgs,
    /// Wait up to SECS for every gateway of the new configuration to report it applied
    /// it; one line per gateway; exit status 1 unless all applied it.
    #[arg(long, value_name = "SECS")]
    pub wait: Option<u64>,
}

/// Arguments of `rustio group show`.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The group's name (`rustio_gateway_group.name`).
    #[arg(value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub ceph: CephArgs,
    /// Print `{"schema": 1, "kind": "gateway-group", ...}` instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `rustio group pull`.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// The group's name (`rustio_gateway_group.name`).
    #[arg(value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub ceph: CephArgs,
    /// Where to write the configuration (`-`: standard output).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
}

/// The connection options for the store: `ceph`'s pool, configuration and user (the
/// image part of the engine's options is not used by the store).
pub fn open_options(pool: &str, conf: Option<&Path>, id: Option<&str>) -> OpenOptions {
    let cfg = RbdConfig {
        pool: pool.to_owned(),
        image: "(group configuration)".to_owned(),
        osd_op_timeout: None,
        conf: conf.map(Path::to_path_buf),
        id: id.map(str::to_owned),
        ignored: Vec::new(),
    };
    let mut o = OpenOptions::new(cfg);
    o.connect_timeout = CONNECT_TIMEOUT;
    o
}

/// Opens group `name`'s object in `pool`.
pub fn open_store(
    pool: &str,
    conf: Option<&Path>,
    id: Option<&str>,
    name: &str,
) -> anyhow::Result<GroupConfigStore> {
    GroupConfigStore::open(&open_options(pool, conf, id), name)
        .with_context(|| format!("opening the configuration of group {name:?} in pool {pool}"))
}

/// Parses and checks a group configuration as `rustio serve --gateway` would (the
/// saveconfig model, the targetcli rules, the `rustio_gateway_group` section, one TPG
/// per target, RBD LUNs only). Opening the images is left to the gateways.
pub fn validate(text: &str) -> anyhow::Result<(SaveConfig, GatewayGroup)> {
    let model = rustio_config::parse::from_str(text)?;
    let report = rustio_config::validate::validate(&model);
    if report.has_errors() {
        let errors: Vec<String> = report.errors().map(ToString::to_string).collect();
        bail!("{}", errors.join("; "));
    }
    let group = GatewayGroup::from_model(&model)?.with_context(|| {
        format!(
            "no \"{}\" section: `rustio group push` stores gateway group configurations only",
            rustio_iscsi::saveconfig::group::GROUP_KEY
        )
    })?;
    group.check_model(&model)?;
    Ok((model, group))
}

/// Runs `rustio group …`; an error when `push --wait` saw a gateway fail or not
/// answer.
pub fn run(cmd: GroupCommand, log: &str) -> anyhow::Result<()> {
    crate::logging::init(log, false);
    let mut out = std::io::stdout().lock();
    match cmd {
        GroupCommand::Push(a) => push(&a, &mut out),
        GroupCommand::Show(a) => show(&a, &mut out),
        GroupCommand::Pull(a) => pull(&a, &mut out),
    }
}

/// `user@host` for the config object's `pushed-by` (the uid when no user name is set).
fn pushed_by() -> String {
    use std::os::unix::fs::MetadataExt as _;
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            std::fs::metadata("/proc/self")
                .map_or_else(|_| "?".into(), |m| format!("uid {}", m.uid()))
        });
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    format!("{user}@{host}")
}

/// Group `name`'s current configuration from `store`; none pushed yet is an error.
fn pushed(store: &GroupConfigStore, name: &str) -> anyhow::Result<GroupConfig> {
    store.load()?.with_context(|| {
        format!(
            "no configuration pushed for group {name:?} ({}/{}): push one with \
             `rustio group push`",
            store.pool(),
            store.object()
        )
    })
}

fn push(a: &PushArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let (_, group) =
        validate(&text).with_context(|| format!("{}: not pushed", a.file.display()))?;
    let store = a.ceph.store(&group.name)?;
    let t = Instant::now();
    let t_ms = now_ms();
    let p = store
        .push(text.as_bytes(), &pushed_by())
        .context("pushing the configuration")?;
    writeln!(
        out,
        "pushed group {} version {} to {}/{}{}",
        group.name,
        p.version,
        a.ceph.pool,
        store.object(),
        if p.all_acknowledged {
            ""
        } else {
            " (not every watcher acknowledged; they find it by polling)"
        }
    )?;
    let Some(secs) = a.wait else { return Ok(()) };
    let names: Vec<&str> = group.gateways.iter().map(|g| g.name.as_str()).collect();
    let records = wait_applied(&store, &names, p.version, t + Duration::from_secs(secs))?;
    let mut all_ok = true;
    for (name, (rec, seen)) in names.iter().zip(&records) {
        let line = applied_line(name, p.version, rec.as_ref(), *seen, (t, t_ms));
        all_ok &= line.1;
        writeln!(out, "{}", line.0)?;
    }
    out.flush()?;
    if !all_ok {
        bail!(
            "version {} of group {} is not applied by every gateway (waited at most {secs} s)",
            p.version,
            group.name
        );
    }
    Ok(())
}

/// Reads the applied records of `names` until each has tried `version` (or a later one)
/// or `deadline` passed; returns each gateway's last record and when it was first seen
/// at that version.
fn wait_applied(
    store: &GroupConfigStore,
    names: &[&str],
    version: u64,
    deadline: Instant,
) -> anyhow::Result<Vec<(Option<AppliedRecord>, Option<Instant>)>> {
    let mut got: Vec<(Option<AppliedRecord>, Option<Instant>)> = vec![(None, None); names.len()];
    loop {
        for (name, slot) in names.iter().zip(got.iter_mut()) {
            if slot.1.is_some() {
                continue;
            }
            match store.applied(name) {
                Ok(rec) => {
                    if rec.as_ref().is_some_and(|r| r.version >= version) {
                        slot.1 = Some(Instant::now());
                    }
                    slot.0 = rec;
                }
                Err(e) => {
                    tracing::warn!(gateway = name, error = %format!("{e:#}"), "reading the applied record")
                }
            }
        }
        if got.iter().all(|s| s.1.is_some()) || Instant::now() >= deadline {
            return Ok(got);
        }
        std::thread::sleep(WAIT_POLL.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// One line of `push --wait` for gateway `name` and whether it applied `version`
/// (pushed at `pushed`: this process's clock and the wall clock in milliseconds). The
/// time to apply is the record's time minus the push's, when the clocks agree that far;
/// else when this command saw the record.
fn applied_line(
    name: &str,
    version: u64,
    rec: Option<&AppliedRecord>,
    seen: Option<Instant>,
    pushed: (Instant, u64),
) -> (String, bool) {
    let last = |r: Option<&AppliedRecord>| {
        r.map_or_else(
            || "it never reported".to_owned(),
            |r| format!("last report: version {}", r.version),
        )
    };
    match (rec, seen) {
        (Some(r), Some(at)) if r.version == version => {
            let ms = r
                .at_ms
                .checked_sub(pushed.1)
                .filter(|ms| u128::from(*ms) <= at.duration_since(pushed.0).as_millis());
            let secs = ms.map_or_else(
                || at.duration_since(pushed.0).as_secs_f64(),
                |ms| Duration::from_millis(ms).as_secs_f64(),
            );
            match &r.outcome {
                Outcome::Applied => (
                    format!("{name}: applied version {version} ({secs:.2} s after the push)"),
                    true,
                ),
                Outcome::Failed(why) => (
                    format!(
                        "{name}: failed: {why} (still serving version {})",
                        r.serving
                    ),
                    false,
                ),
            }
        }
        (Some(r), Some(_)) => (
            format!(
                "{name}: no answer for version {version}: a later version {} was pushed meanwhile",
                r.version
            ),
            false,
        ),
        (r, _) => (format!("{name}: no answer ({})", last(r)), false),
    }
}

/// What `show` reports of one gateway.
fn gateway_json(name: &str, rec: &Result<Option<AppliedRecord>, String>) -> serde_json::Value {
    match rec {
        Ok(Some(r)) => serde_json::json!({
            "name": name,
            "applied_version": r.version,
            "serving_version": r.serving,
            "at_ms": r.at_ms,
            "result": match &r.outcome { Outcome::Applied => "ok", Outcome::Failed(_) => "error" },
            "error": match &r.outcome { Outcome::Applied => None, Outcome::Failed(w) => Some(w) },
        }),
        Ok(None) => serde_json::json!({"name": name, "applied_version": null, "result": null}),
        Err(e) => {
            serde_json::json!({"name": name, "applied_version": null, "result": "unreadable", "error": e})
        }
    }
}

fn show(a: &ShowArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let store = a.ceph.store(&a.name)?;
    let cfg = pushed(&store, &a.name)?;
    let text = String::from_utf8_lossy(&cfg.body).into_owned();
    // The gateways of the stored configuration (it was validated when pushed).
    let names: Vec<String> = validate(&text)
        .map(|(_, g)| g.gateways.into_iter().map(|g| g.name).collect())
        .unwrap_or_default();
    let records: Vec<Result<Option<AppliedRecord>, String>> = names
        .iter()
        .map(|n| {
            store
                .applied(n)
                .map_err(|e| format!("{:#}", anyhow::Error::from(e)))
        })
        .collect();
    if a.json {
        let config: serde_json::Value =
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text.clone()));
        let doc = serde_json::json!({
            "schema": GROUP_JSON_SCHEMA,
            "kind": "gateway-group",
            "group": a.name,
            "pool": a.ceph.pool,
            "object": store.object(),
            "version": cfg.version,
            "pushed_at_ms": cfg.pushed_at_ms,
            "pushed_by": cfg.pushed_by,
            "gateways": names.iter().zip(&records).map(|(n, r)| gateway_json(n, r)).collect::<Vec<_>>(),
            "config": config,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(());
    }
    let age = |ms: u64| now_ms().saturating_sub(ms) / 1000;
    writeln!(
        out,
        "group {} (pool {}, object {})",
        a.name,
        a.ceph.pool,
        store.object()
    )?;
    writeln!(
        out,
        "version {}, pushed {} s ago by {}",
        cfg.version,
        age(cfg.pushed_at_ms),
        cfg.pushed_by
    )?;
    for (n, r) in names.iter().zip(&records) {
        let line = match r {
            Ok(Some(r)) => match &r.outcome {
                Outcome::Applied => format!("version {} applied {} s ago", r.version, age(r.at_ms)),
                Outcome::Failed(w) => format!(
                    "version {} failed {} s ago: {w} (serving version {})",
                    r.version,
                    age(r.at_ms),
                    r.serving
                ),
            },
            Ok(None) => "no report yet".to_owned(),
            Err(e) => format!("record unreadable: {e}"),
        };
        writeln!(out, "  gateway {n}: {line}")?;
    }
    writeln!(out, "configuration:")?;
    out.write_all(&cfg.body)?;
    if !cfg.body.ends_with(b"\n") {
        writeln!(out)?;
    }
    Ok(())
}

fn pull(a: &PullArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let store = a.ceph.store(&a.name)?;
    let cfg = pushed(&store, &a.name)?;
    if a.output == Path::new("-") {
        out.write_all(&cfg.body)?;
    } else {
        std::fs::write(&a.output, &cfg.body)
            .with_context(|| format!("writing {}", a.output.display()))?;
        eprintln!(
            "group {} version {} written to {}",
            a.name,
            cfg.version,
            a.output.display()
        );
    }
    Ok(())
}

/// A gateway of `rustio serve --group`: reads its configuration from the group's object,
/// watches it, and records what it applied (the serving loop is in `serve.rs`).
pub struct Member {
    store: GroupConfigStore,
    group: String,
    gateway: String,
    /// The version being served (0: none yet).
    serving: u64,
    /// The last version tried (applied or failed): not tried again until a newer one
    /// appears or SIGHUP forces it.
    tried: u64,
}

impl Member {
    /// Connects to group `group`'s object as gateway `gateway` and watches it,
    /// `on_event` receiving the notifications.
    pub fn connect(
        store: GroupConfigStore,
        group: &str,
        gateway: &str,
        on_event: GroupEventFn,
    ) -> anyhow::Result<Member> {
        store.watch(on_event).with_context(|| {
            format!(
                "watching {} (has `rustio group push` stored group {group:?} yet?)",
                store.object()
            )
        })?;
        Ok(Member {
            store,
            group: group.to_owned(),
            gateway: gateway.to_owned(),
            serving: 0,
            tried: 0,
        })
    }

    /// The gateway's name.
    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    /// The current configuration, if it is a version not tried yet (any version when
    /// `force`).
    pub fn fetch(&self, force: bool) -> anyhow::Result<Option<GroupConfig>> {
        let cfg = self.current()?;
        Ok((force || cfg.version != self.tried).then_some(cfg))
    }

    /// The current configuration, whatever its version; none pushed yet is an error.
    pub fn current(&self) -> anyhow::Result<GroupConfig> {
        pushed(&self.store, &self.group)
    }

    /// Maps `cfg` for this gateway exactly as `rustio serve --config FILE --gateway GW`
    /// maps the file; `previous` lends its unchanged logical units.
    pub fn map(
        &self,
        cfg: &GroupConfig,
        previous: Option<&ServerConfig>,
    ) -> anyhow::Result<ServerConfig> {
        let text = std::str::from_utf8(&cfg.body).context("the configuration is not UTF-8")?;
        let model = rustio_config::parse::from_str(text)?;
        let group = GatewayGroup::from_model(&model)?;
        if let Some(g) = group.as_ref().filter(|g| g.name != self.group) {
            bail!(
                "the stored configuration is for group {:?}, not {:?}",
                g.name,
                self.group
            );
        }
        Ok(rustio_iscsi::saveconfig::from_model_gateway(
            &model,
            previous,
            Some(&self.gateway),
        )?)
    }

    /// Records the outcome of applying `version` (logged, never fatal: the record is
    /// for `rustio group show` and `push --wait`).
    pub fn record(&mut self, version: u64, result: Result<(), String>) {
        self.tried = version;
        let outcome = match result {
            Ok(()) => {
                self.serving = version;
                Outcome::Applied
            }
            Err(why) => Outcome::Failed(why),
        };
        let rec = AppliedRecord {
            gateway: self.gateway.clone(),
            version,
            at_ms: now_ms(),
            outcome,
            serving: self.serving,
        };
        if let Err(e) = self.store.record_applied(&rec) {
            tracing::warn!(error = %format!("{:#}", anyhow::Error::from(e)), version,
                "could not record the applied version");
        }
    }

    /// Re-establishes the watch if it broke or the OSD stopped confirming it.
    pub fn check_watch(&self) {
        if self.store.watch_ok() {
            return;
        }
        match self.store.rewatch() {
            Ok(()) => {
                tracing::info!(object = %self.store.object(), "group configuration watch re-established")
            }
            Err(e) => tracing::warn!(error = %format!("{:#}", anyhow::Error::from(e)),
                "group configuration watch failed; polling until it works again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP: &str = r#"{
      "storage_objects": [
        {"plugin": "user", "name": "gw", "config": "rbd/rbd/img", "size": 1048576}
      ],
      "targets": [
        {"wwn": "iqn.2024-01.org.rustio.test:gw", "fabric": "iscsi", "tpgs": [{"tag": 1,
          "luns": [{"index": 0, "storage_object": "/backstores/user/gw"}],
          "portals": [], "node_acls": []}]}
      ],
      "rustio_gateway_group": {"name": "g", "gateways": [
        {"name": "gw-a", "portals": ["127.0.0.1:3260"]},
        {"name": "gw-b", "portals": ["127.0.0.1:3261"]}]}
    }"#;

    #[test]
    fn validate_accepts_a_group_and_names_its_gateways() {
        let (_, g) = validate(GROUP).unwrap();
        assert_eq!(g.name, "g");
        let names: Vec<_> = g.gateways.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["gw-a", "gw-b"]);
    }

    #[test]
    fn validate_refuses_what_serve_would_refuse() {
        let cases = [
            ("{", "invalid JSON"),
            (
                r#"{"storage_objects": [], "targets": []}"#,
                "no \"rustio_gateway_group\" section",
            ),
            (
                &GROUP.replace("127.0.0.1:3261", "127.0.0.1:3260"),
                "portal 127.0.0.1:3260 used twice",
            ),
            (
                &GROUP.replace(r#""config": "rbd/rbd/img""#, r#""config": "file//tmp/x""#),
                "a gateway group serves only RBD images",
            ),
        ];
        for (text, want) in cases {
            let e = format!("{:#}", validate(text).unwrap_err());
            assert!(e.contains(want), "{want:?} not in {e:?}");
        }
    }

    #[test]
    fn wait_lines_say_applied_failed_or_no_answer() {
        let t = Instant::now();
        let rec = |version, outcome| AppliedRecord {
            gateway: "gw-a".into(),
            version,
            at_ms: 0,
            outcome,
            serving: 2,
        };
        let ok = rec(3, Outcome::Applied);
        let ok_later = AppliedRecord {
            at_ms: 1_000_050,
            ..ok.clone()
        };
        let seen = t + Duration::from_millis(200);
        let (l, good) = applied_line("gw-a", 3, Some(&ok_later), Some(seen), (t, 1_000_000));
        assert!(good);
        assert_eq!(l, "gw-a: applied version 3 (0.05 s after the push)");
        // A gateway clock behind the pusher's: when it was seen.
        let (l, _) = applied_line("gw-a", 3, Some(&ok), Some(seen), (t, 1_000_000));
        assert_eq!(l, "gw-a: applied version 3 (0.20 s after the push)");
        let (l, good) = applied_line("gw-a", 3, Some(&ok), Some(t), (t, 0));
        assert!(good && l.starts_with("gw-a: applied version 3 ("), "{l}");
        let bad = rec(3, Outcome::Failed("rbd_open: No such file".into()));
        let (l, good) = applied_line("gw-a", 3, Some(&bad), Some(t), (t, 0));
        assert!(!good);
        assert_eq!(
            l,
            "gw-a: failed: rbd_open: No such file (still serving version 2)"
        );
        let old = rec(2, Outcome::Applied);
        let (l, good) = applied_line("gw-a", 3, Some(&old), None, (t, 0));
        assert!(!good);
        assert_eq!(l, "gw-a: no answer (last report: version 2)");
        let (l, _) = applied_line("gw-b", 3, None, None, (t, 0));
        assert_eq!(l, "gw-b: no answer (it never reported)");
    }
}
