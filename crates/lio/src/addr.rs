//! References to LIO objects and targetcli-style object paths
//! (`/backstores/fileio/disk1`, `/iscsi/<iqn>/tpg1/luns/lun0`, ...).

use std::fmt;
use std::str::FromStr;

use rustio_config::fabric::fabric_info;
use rustio_config::Plugin;

use crate::error::Error;

/// A storage object: plugin and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SoRef {
    /// Backstore plugin.
    pub plugin: Plugin,
    /// Storage object name.
    pub name: String,
}

/// A target: fabric and WWN.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetRef {
    /// Fabric module name.
    pub fabric: String,
    /// Target WWN.
    pub wwn: String,
}

/// A target portal group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TpgRef {
    /// Its target.
    pub target: TargetRef,
    /// Its tag.
    pub tag: u64,
}

/// A TPG LUN.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LunRef {
    /// Its TPG.
    pub tpg: TpgRef,
    /// LUN number.
    pub index: u64,
}

/// A network portal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortalRef {
    /// Its TPG.
    pub tpg: TpgRef,
    /// IPv4 address or bracketed IPv6 address.
    pub ip: String,
    /// TCP port.
    pub port: u64,
}

/// An initiator ACL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AclRef {
    /// Its TPG.
    pub tpg: TpgRef,
    /// Initiator name.
    pub node_wwn: String,
}

/// A mapped LUN of an ACL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MappedLunRef {
    /// Its ACL.
    pub acl: AclRef,
    /// LUN number seen by the initiator.
    pub index: u64,
}

/// An ALUA target port group of a storage object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AluaRef {
    /// Its storage object.
    pub so: SoRef,
    /// Group name.
    pub name: String,
}

impl SoRef {
    /// Builds a reference.
    pub fn new(plugin: Plugin, name: impl Into<String>) -> SoRef {
        SoRef {
            plugin,
            name: name.into(),
        }
    }
}

impl TpgRef {
    /// Builds a reference.
    pub fn new(fabric: &str, wwn: &str, tag: u64) -> TpgRef {
        TpgRef {
            target: TargetRef {
                fabric: fabric.to_owned(),
                wwn: wwn.to_owned(),
            },
            tag,
        }
    }
}

impl fmt::Display for SoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/backstores/{}/{}", self.plugin, self.name)
    }
}

impl fmt::Display for TargetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}/{}", self.fabric, self.wwn)
    }
}

impl fmt::Display for TpgRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/tpg{}", self.target, self.tag)
    }
}

impl fmt::Display for LunRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/luns/lun{}", self.tpg, self.index)
    }
}

impl fmt::Display for PortalRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/portals/{}:{}", self.tpg, self.ip, self.port)
    }
}

impl fmt::Display for AclRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/acls/{}", self.tpg, self.node_wwn)
    }
}

impl fmt::Display for MappedLunRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/mapped_lun{}", self.acl, self.index)
    }
}

impl fmt::Display for AluaRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/alua/{}", self.so, self.name)
    }
}

/// Any node of the tree `rustio ls` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectPath {
    /// `/`.
    Root,
    /// `/backstores`.
    Backstores,
    /// `/backstores/<plugin>`.
    Plugin(Plugin),
    /// `/backstores/<plugin>/<name>`.
    StorageObject(SoRef),
    /// `/backstores/<plugin>/<name>/alua`.
    AluaGroups(SoRef),
    /// `/backstores/<plugin>/<name>/alua/<group>`.
    AluaGroup(AluaRef),
    /// `/<fabric>`.
    Fabric(String),
    /// `/<fabric>/<wwn>`.
    Target(TargetRef),
    /// `/<fabric>/<wwn>/tpg<N>`.
    Tpg(TpgRef),
    /// `.../tpg<N>/luns`.
    Luns(TpgRef),
    /// `.../tpg<N>/luns/lun<M>`.
    Lun(LunRef),
    /// `.../tpg<N>/portals`.
    Portals(TpgRef),
    /// `.../tpg<N>/portals/<ip>:<port>`.
    Portal(PortalRef),
    /// `.../tpg<N>/acls`.
    Acls(TpgRef),
    /// `.../tpg<N>/acls/<wwn>`.
    Acl(AclRef),
    /// `.../acls/<wwn>/mapped_lun<M>`.
    MappedLun(MappedLunRef),
}

impl fmt::Display for ObjectPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectPath::Root => f.write_str("/"),
            ObjectPath::Backstores => f.write_str("/backstores"),
            ObjectPath::Plugin(p) => write!(f, "/backstores/{p}"),
            ObjectPath::StorageObject(s) => write!(f, "{s}"),
            ObjectPath::AluaGroups(s) => write!(f, "{s}/alua"),
            ObjectPath::AluaGroup(a) => write!(f, "{a}"),
            ObjectPath::Fabric(n) => write!(f, "/{n}"),
            ObjectPath::Target(t) => write!(f, "{t}"),
            ObjectPath::Tpg(t) => write!(f, "{t}"),
            ObjectPath::Luns(t) => write!(f, "{t}/luns"),
            ObjectPath::Lun(l) => write!(f, "{l}"),
            ObjectPath::Portals(t) => write!(f, "{t}/portals"),
            ObjectPath::Portal(p) => write!(f, "{p}"),
            ObjectPath::Acls(t) => write!(f, "{t}/acls"),
            ObjectPath::Acl(a) => write!(f, "{a}"),
            ObjectPath::MappedLun(m) => write!(f, "{m}"),
        }
    }
}

fn bad(path: &str, detail: impl Into<String>) -> Error {
    Error::rule(
        "object paths look like /backstores/<plugin>/<name> or \
         /<fabric>/<wwn>/tpg<N>[/luns/lun<M>|/portals/<ip>:<port>|/acls/<wwn>[/mapped_lun<M>]]",
        format!("{path:?}: {}", detail.into()),
    )
}

fn number(s: &str, prefixes: &[&str]) -> Option<u64> {
    for p in prefixes {
        if let Some(rest) = s.strip_prefix(p) {
            if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
                return rest.parse().ok();
            }
        }
    }
    None
}

/// Parses a TPG component: `tpg1`, `tpgt_1` or `1`.
pub fn parse_tpg_component(s: &str) -> Option<u64> {
    number(s, &["tpgt_", "tpg", ""])
}

/// Parses a LUN component: `lun0`, `lun_0` or `0`.
pub fn parse_lun_component(s: &str) -> Option<u64> {
    number(s, &["lun_", "lun", ""])
}

/// Splits `<ip>:<port>` (IPv6 in brackets).
pub fn parse_portal(s: &str) -> Option<(String, u64)> {
    let (ip, port) = s.rsplit_once(':')?;
    if ip.is_empty() {
        return None;
    }
    let port = port.parse().ok()?;
    Some((ip.to_owned(), port))
}

fn plugin_component(s: &str) -> Plugin {
    if s.starts_with("user:") {
        Plugin::User
    } else {
        Plugin::from_name(s)
    }
}

impl FromStr for ObjectPath {
    type Err = Error;

    fn from_str(path: &str) -> Result<ObjectPath, Error> {
        let parts: Vec<&str> = path
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        let Some((&first, rest)) = parts.split_first() else {
            return Ok(ObjectPath::Root);
        };
        if first == "backstores" {
            return match rest {
                [] => Ok(ObjectPath::Backstores),
                [p] => Ok(ObjectPath::Plugin(plugin_component(p))),
                [p, n] => Ok(ObjectPath::StorageObject(SoRef::new(
                    plugin_component(p),
                    *n,
                ))),
                [p, n, "alua"] => Ok(ObjectPath::AluaGroups(SoRef::new(plugin_component(p), *n))),
                [p, n, "alua", g] => Ok(ObjectPath::AluaGroup(AluaRef {
                    so: SoRef::new(plugin_component(p), *n),
                    name: (*g).to_owned(),
                })),
                _ => Err(bad(path, "too many components under /backstores")),
            };
        }
        let fabric = first.to_owned();
        let Some((&wwn, rest)) = rest.split_first() else {
            return Ok(ObjectPath::Fabric(fabric));
        };
        let target = TargetRef {
            fabric: fabric.clone(),
            wwn: wwn.to_owned(),
        };
        let Some((&tpg_part, rest)) = rest.split_first() else {
            return Ok(ObjectPath::Target(target));
        };
        // Single-TPG fabrics (loopback) are shown by targetcli without the TPG level.
        let single = fabric_info(&fabric).is_some_and(|i| !i.tpgts);
        let (tag, rest) = match parse_tpg_component(tpg_part) {
            Some(tag) if tpg_part.starts_with("tpg") => (tag, rest),
            _ if single && matches!(tpg_part, "luns" | "acls" | "portals") => (1, &parts[2..]),
            _ => return Err(bad(path, format!("{tpg_part:?} is not a TPG (tpg<N>)"))),
        };
        let tpg = TpgRef { target, tag };
        match rest {
            [] => Ok(ObjectPath::Tpg(tpg)),
            ["luns"] => Ok(ObjectPath::Luns(tpg)),
            ["luns", l] => parse_lun_component(l)
                .map(|index| ObjectPath::Lun(LunRef { tpg, index }))
                .ok_or_else(|| bad(path, format!("{l:?} is not a LUN (lun<N>)"))),
            ["portals"] => Ok(ObjectPath::Portals(tpg)),
            ["portals", p] => parse_portal(p)
                .map(|(ip, port)| ObjectPath::Portal(PortalRef { tpg, ip, port }))
                .ok_or_else(|| bad(path, format!("{p:?} is not <ip>:<port>"))),
            ["acls"] => Ok(ObjectPath::Acls(tpg)),
            ["acls", w] => Ok(ObjectPath::Acl(AclRef {
                tpg,
                node_wwn: (*w).to_owned(),
            })),
            ["acls", w, m] => number(m, &["mapped_lun", "lun_", "lun", ""])
                .map(|index| {
                    ObjectPath::MappedLun(MappedLunRef {
                        acl: AclRef {
                            tpg,
                            node_wwn: (*w).to_owned(),
                        },
                        index,
                    })
                })
                .ok_or_else(|| bad(path, format!("{m:?} is not a mapped LUN (mapped_lun<N>)"))),
            _ => Err(bad(path, "unknown components below the TPG")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(s: &str) {
        let p: ObjectPath = s.parse().unwrap();
        assert_eq!(p.to_string(), s, "{p:?}");
    }

    #[test]
    fn round_trips() {
        for s in [
            "/",
            "/backstores",
            "/backstores/fileio",
            "/backstores/fileio/disk1",
            "/backstores/ramdisk/r/alua",
            "/backstores/block/b/alua/grp",
            "/iscsi",
            "/iscsi/iqn.2003-01.org.x:y",
            "/iscsi/iqn.2003-01.org.x:y/tpg1",
            "/iscsi/iqn.2003-01.org.x:y/tpg1/luns",
            "/iscsi/iqn.2003-01.org.x:y/tpg1/luns/lun0",
            "/iscsi/iqn.2003-01.org.x:y/tpg2/portals/0.0.0.0:3260",
            "/iscsi/iqn.2003-01.org.x:y/tpg2/portals/[::0]:3260",
            "/iscsi/iqn.2003-01.org.x:y/tpg1/acls/iqn.1993-08.org.debian:01:ab",
            "/iscsi/iqn.2003-01.org.x:y/tpg1/acls/iqn.1993-08.org.debian:01:ab/mapped_lun3",
        ] {
            rt(s);
        }
    }

    #[test]
    fn aliases_and_errors() {
        let p: ObjectPath = "backstores/user:file/t1".parse().unwrap();
        assert_eq!(p, ObjectPath::StorageObject(SoRef::new(Plugin::User, "t1")));
        let p: ObjectPath = "/loopback/naa.5001405123456789/luns/lun_2".parse().unwrap();
        assert_eq!(
            p.to_string(),
            "/loopback/naa.5001405123456789/tpg1/luns/lun2"
        );
        let p: ObjectPath = "/iscsi/iqn.2003-01.a.b:c/tpgt_3".parse().unwrap();
        assert_eq!(p.to_string(), "/iscsi/iqn.2003-01.a.b:c/tpg3");
        for bad in [
            "/iscsi/iqn.2003-01.a.b:c/luns",
            "/iscsi/iqn.2003-01.a.b:c/tpg1/luns/x",
            "/iscsi/iqn.2003-01.a.b:c/tpg1/portals/nope",
            "/iscsi/iqn.2003-01.a.b:c/tpg1/bogus",
            "/backstores/fileio/a/b/c/d",
        ] {
            let e = bad.parse::<ObjectPath>().unwrap_err().to_string();
            assert!(e.contains("rule: object paths"), "{bad}: {e}");
        }
    }
}
