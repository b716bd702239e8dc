//! The `rustio` LIO subcommands: targetcli's tree as scriptable commands.
//!
//! Every command that changes configfs runs as a [`crate::Plan`] through
//! [`crate::Lio::run_plan`], so a failure halfway leaves the tree as it was.
//! [`run_with`] takes an opened [`Lio`] and output streams, which is how tests (and the
//! VM harness) drive exactly the code the binary runs.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::error::{Error, Result};
use crate::Lio;

mod exec;
mod ls;
pub mod progress;

pub use ls::JSON_SCHEMA;
pub mod targetcli;

/// Options every LIO subcommand accepts.
#[derive(Debug, Clone, Default, Args)]
pub struct Global {
    /// LIO configfs root; defaults to /sys/kernel/config/target (loading
    /// target_core_mod and mounting configfs when needed).
    #[arg(long, global = true, env = "RUSTIO_CONFIGFS_ROOT", value_name = "PATH")]
    pub configfs_root: Option<PathBuf>,
}

/// LIO configfs management commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the LIO configuration tree (like targetcli `ls`).
    Ls(LsArgs),
    /// Create a backstore, target, TPG, LUN, portal, ACL, mapped LUN or ALUA group.
    Create(CreateArgs),
    /// Delete the object at PATH (and what it contains).
    Delete(DeleteArgs),
    /// Change attributes, parameters, authentication or flags.
    Set(SetArgs),
    /// Show iSCSI sessions.
    Sessions(SessionsArgs),
    /// Save the live configuration as saveconfig.json.
    Save(SaveArgs),
    /// Restore a saveconfig.json file.
    Restore(RestoreArgs),
    /// Delete the whole LIO configuration.
    Clear(ClearArgs),
    /// Make the live configuration match FILE with the minimal set of changes.
    Apply(ApplyArgs),
}

/// `rustio ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Object path, e.g. /backstores/fileio or /iscsi/<iqn>/tpg1.
    #[arg(default_value = "/")]
    pub path: String,
    /// Print JSON instead of a tree.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub global: Global,
}

/// `rustio create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// What to create.
    #[command(subcommand)]
    pub what: CreateWhat,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub global: Global,
}

/// Objects `rustio create` makes.
#[derive(Debug, Subcommand)]
pub enum CreateWhat {
    /// A storage object.
    Backstore {
        /// Plugin and its arguments.
        #[command(subcommand)]
        kind: BackstoreKind,
    },
    /// A target; iSCSI and vhost targets get TPG 1 (enabled, with the default portal
    /// for iSCSI) like targetcli, loopback targets TPG 1 with a nexus.
    Target {
        /// Target WWN; generated when omitted (iqn.2003-01.org.linux-iscsi.<host>... or naa.5001405...).
        wwn: Option<String>,
        /// Fabric module.
        #[arg(long, default_value = "iscsi")]
        fabric: String,
        /// Do not create TPG 1.
        #[arg(long)]
        no_tpg: bool,
        /// Do not create the default portal [::0]:3260.
        #[arg(long)]
        no_portal: bool,
    },
    /// A target portal group.
    Tpg {
        /// Target path, e.g. /iscsi/<iqn>.
        target: String,
        /// TPG tag; the lowest free tag when omitted.
        tag: Option<u64>,
        /// Do not create the default portal [::0]:3260.
        #[arg(long)]
        no_portal: bool,
        /// Leave the TPG disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// A LUN exporting a storage object.
    Lun {
        /// TPG path, e.g. /iscsi/<iqn>/tpg1.
        tpg: String,
        /// Storage object path, e.g. /backstores/fileio/disk1.
        storage_object: String,
        /// LUN number; the lowest free one when omitted.
        #[arg(long)]
        lun: Option<u64>,
        /// Name of the link to the storage object.
        #[arg(long)]
        alias: Option<String>,
        /// Do not map the new LUN into every ACL of the TPG.
        #[arg(long)]
        no_mapped_luns: bool,
    },
    /// A network portal (iSCSI).
    Portal {
        /// TPG path.
        tpg: String,
        /// IP address; IPv6 may be given with or without brackets.
        #[arg(default_value = "[::0]")]
        ip: String,
        /// TCP port.
        #[arg(default_value_t = 3260)]
        port: u64,
        /// Enable iSER.
        #[arg(long)]
        iser: bool,
    },
    /// An initiator ACL.
    Acl {
        /// TPG path.
        tpg: String,
        /// Initiator name.
        wwn: String,
        /// Do not map every TPG LUN into the new ACL.
        #[arg(long)]
        no_mapped_luns: bool,
    },
    /// A mapped LUN in an ACL.
    MappedLun {
        /// ACL path, e.g. /iscsi/<iqn>/tpg1/acls/<initiator>.
        acl: String,
        /// LUN number the initiator sees.
        mapped_lun: u64,
        /// TPG LUN (`lun0` or `0`).
        tpg_lun: String,
        /// Read-only for this initiator.
        #[arg(long)]
        write_protect: bool,
    },
    /// An ALUA target port group on a storage object.
    AluaGroup {
        /// Storage object path.
        storage_object: String,
        /// Group name.
        name: String,
        /// Target port group id (1-65535).
        id: u64,
    },
}

/// Backstore plugins and their arguments.
#[derive(Debug, Subcommand)]
pub enum BackstoreKind {
    /// File-backed; creates FILE (sparse) when it does not exist.
    Fileio {
        /// Storage object name.
        name: String,
        /// Backing file or block device.
        file: PathBuf,
        /// Size (e.g. 1G) when FILE does not exist yet.
        size: Option<String>,
        /// Write-through (no buffered I/O, no write cache); targetcli's default is write-back.
        #[arg(long)]
        write_thru: bool,
        /// Allocate the whole new file instead of a sparse one.
        #[arg(long)]
        no_sparse: bool,
        /// Asynchronous I/O.
        #[arg(long)]
        aio: bool,
        /// Unit serial; generated when omitted.
        #[arg(long)]
        wwn: Option<String>,
    },
    /// Block-device-backed.
    Block {
        /// Storage object name.
        name: String,
        /// Block device.
        dev: PathBuf,
        /// Export read-only.
        #[arg(long)]
        readonly: bool,
        /// Unit serial; generated when omitted.
        #[arg(long)]
        wwn: Option<String>,
    },
    /// RAM disk.
    Ramdisk {
        /// Storage object name.
        name: String,
        /// Size (e.g. 1G).
        size: String,
        /// No memory behind it: reads return zeroes, writes are dropped.
        #[arg(long)]
        nullio: bool,
        /// Unit serial; generated when omitted.
        #[arg(long)]
        wwn: Option<String>,
    },
    /// SCSI pass-through.
    Pscsi {
        /// Storage object name.
        name: String,
        /// SCSI device path or H:C:T:L.
        dev: String,
    },
    /// TCMU userspace backstore (served by rustio or tcmu-runner).
    User {
        /// Storage object name.
        name: String,
        /// Size (e.g. 1G).
        size: String,
        /// `<handler>/<handler config>`, e.g. `file/disk.img`.
        config: String,
        /// Maximum sectors per command.
        #[arg(long)]
        hw_max_sectors: Option<u64>,
        /// Extra `key=value,...` for the control file (e.g. `max_data_area_mb=64`).
        #[arg(long)]
        control: Option<String>,
        /// Unit serial; generated when omitted.
        #[arg(long)]
        wwn: Option<String>,
    },
}

/// `rustio delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Object path, as `rustio ls` shows it.
    pub path: String,
    /// Also delete the LUNs (and mapped LUNs) exporting a backstore.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub global: Global,
}

/// `rustio set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// What to set.
    #[command(subcommand)]
    pub what: SetWhat,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub global: Global,
}

/// Settings `rustio set` changes.
#[derive(Debug, Subcommand)]
pub enum SetWhat {
    /// `attrib/` values of a backstore, TPG or ACL.
    Attribute {
        /// Object path.
        path: String,
        /// `name=value` pairs.
        #[arg(required = true)]
        settings: Vec<String>,
    },
    /// iSCSI login parameters of a TPG (`param/`).
    Parameter {
        /// TPG path.
        path: String,
        /// `name=value` pairs.
        #[arg(required = true)]
        settings: Vec<String>,
    },
    /// CHAP on a TPG or ACL (userid, password, mutual_userid, mutual_password; empty
    /// value unsets), or discovery authentication on /iscsi (also enable=0|1).
    Auth {
        /// TPG, ACL or fabric path.
        path: String,
        /// `name=value` pairs.
        #[arg(required = true)]
        settings: Vec<String>,
    },
    /// Enable (1) or disable (0) a TPG.
    Enable {
        /// TPG path.
        path: String,
        /// 1/0, on/off, true/false.
        value: String,
    },
    /// Write protection of a mapped LUN.
    WriteProtect {
        /// Mapped LUN path.
        path: String,
        /// 1/0, on/off, true/false.
        value: String,
    },
    /// iSER on a portal.
    Iser {
        /// Portal path.
        path: String,
        /// 1/0, on/off, true/false.
        value: String,
    },
    /// Settings of an ALUA group (alua_access_state=1 ...).
    Alua {
        /// ALUA group path, e.g. /backstores/fileio/disk1/alua/grp.
        path: String,
        /// `name=value` pairs.
        #[arg(required = true)]
        settings: Vec<String>,
    },
}

/// `rustio sessions`.
#[derive(Debug, Args)]
pub struct SessionsArgs {
    /// Also show mapped LUNs and connections.
    #[arg(long)]
    pub detail: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub global: Global,
}

/// `rustio save`.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Destination.
    #[arg(default_value = rustio_config::store::DEFAULT_SAVE_FILE)]
    pub file: PathBuf,
    /// Keep a gzip backup of the previous file in <dir>/backup/ (default only for
    /// /etc/target/saveconfig.json, like targetcli).
    #[arg(long, conflicts_with = "no_backup")]
    pub backup: bool,
    /// Do not back up the previous file.
    #[arg(long)]
    pub no_backup: bool,
    /// How many backups to keep.
    #[arg(long, default_value_t = rustio_config::store::DEFAULT_BACKUPS)]
    pub max_backups: usize,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub global: Global,
}

/// `rustio restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// saveconfig.json to restore.
    #[arg(default_value = rustio_config::store::DEFAULT_SAVE_FILE)]
    pub file: PathBuf,
    /// Delete the current configuration first.
    #[arg(long)]
    pub clear_existing: bool,
    /// Print the steps without executing them.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub global: Global,
}

/// `rustio clear`.
#[derive(Debug, Args)]
pub struct ClearArgs {
    /// Required: confirms that everything is to be deleted.
    #[arg(long)]
    pub confirm: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub global: Global,
}

/// `rustio apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The desired configuration (saveconfig.json format).
    pub file: PathBuf,
    /// Print the plan without executing it.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub global: Global,
}

impl Command {
    /// The global options of this command.
    pub fn global(&self) -> &Global {
        match self {
            Command::Ls(a) => &a.global,
            Command::Create(a) => &a.global,
            Command::Delete(a) => &a.global,
            Command::Set(a) => &a.global,
            Command::Sessions(a) => &a.global,
            Command::Save(a) => &a.global,
            Command::Restore(a) => &a.global,
            Command::Clear(a) => &a.global,
            Command::Apply(a) => &a.global,
        }
    }
}

/// Opens the configfs root the command names and runs it.
pub fn run(cmd: Command, out: &mut dyn Write, err: &mut dyn Write) -> Result<()> {
    let lio = Lio::open(cmd.global().configfs_root.as_deref())?;
    run_with(&lio, cmd, out, err)
}

/// Runs a command against an opened tree.
pub fn run_with(lio: &Lio, cmd: Command, out: &mut dyn Write, err: &mut dyn Write) -> Result<()> {
    let mut ctx = exec::Ctx { lio, out, err };
    match cmd {
        Command::Ls(a) => ls::ls(&mut ctx, &a),
        Command::Create(a) => exec::create(&mut ctx, a.what),
        Command::Delete(a) => exec::delete(&mut ctx, &a),
        Command::Set(a) => exec::set(&mut ctx, a.what),
        Command::Sessions(a) => ls::sessions(&mut ctx, &a),
        Command::Save(a) => exec::save(&mut ctx, &a),
        Command::Restore(a) => exec::restore(&mut ctx, &a),
        Command::Clear(a) => exec::clear(&mut ctx, &a),
        Command::Apply(a) => exec::apply(&mut ctx, &a),
    }
}

pub(crate) fn out_err(e: std::io::Error) -> Error {
    Error::Io {
        op: "write output to",
        path: PathBuf::from("stdout"),
        source: e,
    }
}
