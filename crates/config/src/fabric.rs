//! What each LIO fabric module supports, after rtslib-fb's `fabric.py`.

/// Naming schemes a fabric accepts for target and initiator names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WwnType {
    /// iSCSI qualified name.
    Iqn,
    /// NAA (FC, SAS, loopback, vhost).
    Naa,
    /// EUI-64.
    Eui,
    /// InfiniBand GID (`ib.` + 32 hex digits).
    Ib,
    /// Anything.
    Free,
}

/// Static description of a fabric module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FabricInfo {
    /// configfs directory name under `/sys/kernel/config/target`.
    pub name: &'static str,
    /// Kernel modules to load when the directory cannot be created (first match wins).
    pub kernel_modules: &'static [&'static str],
    /// Accepted target WWN types; the first one is generated when none is given.
    pub wwn_types: &'static [WwnType],
    /// Per-initiator ACLs (`acls/`).
    pub acls: bool,
    /// CHAP authentication on TPGs and ACLs (`auth/`).
    pub auth: bool,
    /// IP network portals (`np/`).
    pub nps: bool,
    /// Several TPGs per target.
    pub tpgts: bool,
    /// TPGs need an initiator-side nexus WWN (`nexus` file) before LUNs work.
    pub nexus: bool,
    /// Fabric-wide discovery authentication (`discovery_auth/`).
    pub discovery_auth: bool,
}

const ISCSI: FabricInfo = FabricInfo {
    name: "iscsi",
    kernel_modules: &["iscsi_target_mod"],
    wwn_types: &[WwnType::Iqn, WwnType::Naa, WwnType::Eui],
    acls: true,
    auth: true,
    nps: true,
    tpgts: true,
    nexus: false,
    discovery_auth: true,
};

const LOOPBACK: FabricInfo = FabricInfo {
    name: "loopback",
    kernel_modules: &["tcm_loop"],
    wwn_types: &[WwnType::Naa],
    acls: false,
    auth: false,
    nps: false,
    tpgts: false,
    nexus: true,
    discovery_auth: false,
};

const VHOST: FabricInfo = FabricInfo {
    name: "vhost",
    kernel_modules: &["vhost_scsi", "tcm_vhost"],
    wwn_types: &[WwnType::Naa],
    acls: true,
    auth: false,
    nps: false,
    tpgts: true,
    nexus: true,
    discovery_auth: false,
};

const OTHERS: [FabricInfo; 8] = [
    FabricInfo {
        name: "qla2xxx",
        kernel_modules: &["tcm_qla2xxx"],
        wwn_types: &[WwnType::Naa],
        acls: true,
        auth: false,
        nps: false,
        tpgts: false,
        nexus: false,
        discovery_auth: false,
    },
    FabricInfo {
        name: "efct",
        kernel_modules: &["efct"],
        wwn_types: &[WwnType::Naa],
        acls: true,
        auth: false,
        nps: false,
        tpgts: false,
        nexus: false,
        discovery_auth: false,
    },
    FabricInfo {
        name: "tcm_fc",
        kernel_modules: &["tcm_fc"],
        wwn_types: &[WwnType::Naa],
        acls: true,
        auth: false,
        nps: false,
        tpgts: false,
        nexus: false,
        discovery_auth: false,
    },
    FabricInfo {
        name: "srpt",
        kernel_modules: &["ib_srpt"],
        wwn_types: &[WwnType::Ib],
        acls: true,
        auth: false,
        nps: false,
        tpgts: false,
        nexus: false,
        discovery_auth: false,
    },
    FabricInfo {
        name: "sbp",
        kernel_modules: &["sbp_target"],
        wwn_types: &[WwnType::Eui],
        acls: false,
        auth: false,
        nps: false,
        tpgts: false,
        nexus: false,
        discovery_auth: false,
    },
    FabricInfo {
        name: "usb_gadget",
        kernel_modules: &["tcm_usb_gadget"],
        wwn_types: &[WwnType::Naa],
        acls: false,
        auth: false,
        nps: false,
        tpgts: false,
        nexus: true,
        discovery_auth: false,
    },
    FabricInfo {
        name: "xen-pvscsi",
        kernel_modules: &["xen-scsiback"],
        wwn_types: &[WwnType::Naa],
        acls: false,
        auth: false,
        nps: false,
        tpgts: true,
        nexus: true,
        discovery_auth: false,
    },
    FabricInfo {
        name: "ibmvscsis",
        kernel_modules: &["ibmvscsis"],
        wwn_types: &[WwnType::Free],
        acls: false,
        auth: false,
        nps: false,
        tpgts: false,
        nexus: false,
        discovery_auth: false,
    },
];

/// The fabrics rustio creates objects on (others are read and saved only).
pub const MANAGED_FABRICS: [&FabricInfo; 3] = [&ISCSI, &LOOPBACK, &VHOST];

/// Looks up a fabric by its configfs/saveconfig name.
pub fn fabric_info(name: &str) -> Option<&'static FabricInfo> {
    match name {
        "iscsi" => Some(&ISCSI),
        "loopback" => Some(&LOOPBACK),
        "vhost" => Some(&VHOST),
        other => OTHERS.iter().find(|f| f.name == other),
    }
}

/// Checks a name against a fabric's accepted WWN types; the error lists what was tried.
pub fn validate_fabric_wwn(info: &FabricInfo, wwn: &str) -> Result<WwnType, String> {
    if info.wwn_types.contains(&WwnType::Iqn) {
        // iSCSI names: one validator knows all three types (RFC 3720 3.2.6.3).
        return crate::wwn::validate_iscsi_name(wwn)
            .map(|k| match k {
                crate::wwn::WwnKind::Iqn => WwnType::Iqn,
                crate::wwn::WwnKind::Eui => WwnType::Eui,
                crate::wwn::WwnKind::Naa => WwnType::Naa,
            })
            .map_err(|e| e.to_string());
    }
    let mut reasons = Vec::new();
    for ty in info.wwn_types {
        let r = match ty {
            WwnType::Iqn if wwn.starts_with("iqn.") => crate::wwn::validate_iscsi_name(wwn)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            WwnType::Iqn => Err("not an iqn. name".to_owned()),
            WwnType::Naa => crate::wwn::validate_naa(wwn).map_err(|e| e.to_string()),
            WwnType::Eui => crate::wwn::validate_eui(wwn).map_err(|e| e.to_string()),
            WwnType::Ib => match wwn.strip_prefix("ib.") {
                Some(h) if h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(()),
                _ => Err("ib names are ib. followed by 32 hex digits".to_owned()),
            },
            // The name becomes a configfs directory: one path component.
            WwnType::Free => {
                if crate::validate::is_file_name(wwn) {
                    Ok(())
                } else {
                    Err(
                        "names must be one file name (non-empty, at most 255 bytes, \
                         without '/' or NUL, not '.' or '..')"
                            .to_owned(),
                    )
                }
            }
        };
        match r {
            Ok(()) => return Ok(*ty),
            Err(e) => reasons.push(e),
        }
    }
    Err(reasons.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_and_features() {
        let i = fabric_info("iscsi").unwrap();
        assert!(i.nps && i.acls && i.auth && i.tpgts && !i.nexus);
        let l = fabric_info("loopback").unwrap();
        assert!(l.nexus && !l.tpgts && !l.acls);
        assert!(fabric_info("tcm_fc").is_some());
        assert!(fabric_info("fc").is_none());
    }

    #[test]
    fn fabric_wwns() {
        let i = fabric_info("iscsi").unwrap();
        assert_eq!(
            validate_fabric_wwn(i, "iqn.2003-01.org.x:y"),
            Ok(WwnType::Iqn)
        );
        assert_eq!(
            validate_fabric_wwn(i, "naa.5001405123456789"),
            Ok(WwnType::Naa)
        );
        assert!(validate_fabric_wwn(i, "iqn.2003-1.org.x").is_err());
        // Free-form names (ibmvscsis) are one configfs path component.
        let v = fabric_info("ibmvscsis").unwrap();
        assert_eq!(validate_fabric_wwn(v, "30000002"), Ok(WwnType::Free));
        for bad in ["", ".", "..", "a/b", "a\0b", &"x".repeat(256)] {
            assert!(validate_fabric_wwn(v, bad).is_err(), "{bad:?}");
        }
        assert_eq!(validate_fabric_wwn(v, &"x".repeat(255)), Ok(WwnType::Free));
        let l = fabric_info("loopback").unwrap();
        assert!(validate_fabric_wwn(l, "iqn.2003-01.org.x:y").is_err());
        assert_eq!(
            validate_fabric_wwn(l, "naa.5001405123456789"),
            Ok(WwnType::Naa)
        );
    }
}
