//! targetcli fidelity against the fake kernel: what `rustio save` writes has the keys
//! rtslib-fb's `dump()` methods write (python3-rtslib-fb 2.1.75, the Debian 12
//! package targetcli-fb uses), and what a file has is written back on restore.
//!
//! The key sets below are taken from rtslib: `CFSNode.dump` (node.py) adds
//! `attributes`/`parameters` when the object's `attrib/`/`param/` has readable and
//! writable files; each class then adds its own keys (target.py `Target.dump`,
//! `TPG.dump`, `LUN.dump`, `NetworkPortal.dump`, `NodeACL.dump`, `MappedLUN.dump`;
//! tcm.py `StorageObject.dump` and the per-plugin `dump`s; alua.py
//! `ALUATargetPortGroup.dump` with `alua_rw_params`).

mod common;

use std::collections::BTreeSet;

use common::{full_config, Env};
use rustio_config::{ConfigValue, SaveConfig};
use rustio_lio::Op;
use serde_json::Value;

const IQN: &str = "iqn.2003-01.org.linux-iscsi.test.x8664:sn.0123456789ab";
const LOOP: &str = "naa.5001405aaaaaaaaa";

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

/// The saved JSON of the live configuration (what `rustio save` writes).
fn saved(env: &Env) -> Value {
    serde_json::from_str(&env.lio.dump().unwrap().to_json().unwrap()).unwrap()
}

fn target<'a>(v: &'a Value, fabric: &str, wwn: &str) -> &'a Value {
    v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["fabric"] == fabric && t["wwn"] == wwn)
        .unwrap_or_else(|| panic!("no target {fabric}/{wwn}"))
}

fn so<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["storage_objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no storage object {name}"))
}

fn restore(env: &Env, text: &str) -> rustio_lio::Result<rustio_lio::Plan> {
    let cfg = SaveConfig::from_json(text).unwrap();
    env.lio.restore(&cfg, false, &mut |_, _| {})
}

fn read(env: &Env, rel: &str) -> String {
    std::fs::read_to_string(env.root().join(rel))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn every_saved_object_has_the_keys_rtslib_dump_writes() {
    let env = Env::new();
    env.lio
        .apply(&full_config(&env), &mut |_, _| {})
        .expect("apply");
    let v = saved(&env);
    assert_eq!(
        keys(&v),
        set(&["fabric_modules", "storage_objects", "targets"])
    );

    // Target.dump: CFSNode.dump (param/cmd_completion_affinity) + wwn, fabric, tpgs.
    let t = target(&v, "iscsi", IQN);
    assert_eq!(keys(t), set(&["wwn", "fabric", "tpgs", "parameters"]));
    // TPG.dump: attributes, parameters, tag, enable, luns, portals, node_acls (no
    // chap_* when unset).
    let g = &t["tpgs"][0];
    assert_eq!(
        keys(g),
        set(&[
            "attributes",
            "parameters",
            "tag",
            "enable",
            "luns",
            "portals",
            "node_acls"
        ])
    );
    // LUN.dump: storage_object, index, alias, alua_tg_pt_gp_name.
    for l in g["luns"].as_array().unwrap() {
        assert_eq!(
            keys(l),
            set(&["storage_object", "index", "alias", "alua_tg_pt_gp_name"])
        );
    }
    // NetworkPortal.dump: port, ip_address, iser, offload.
    for p in g["portals"].as_array().unwrap() {
        assert_eq!(keys(p), set(&["port", "ip_address", "iser", "offload"]));
    }
    // NodeACL.dump: attributes (param/ is read-only for iSCSI ACLs), node_wwn,
    // mapped_luns, chap_* when set; MappedLUN.dump: write_protect, index, tpg_lun, alias.
    let acl = &g["node_acls"][0];
    assert_eq!(
        keys(acl),
        set(&[
            "attributes",
            "node_wwn",
            "mapped_luns",
            "chap_userid",
            "chap_password"
        ])
    );
    for m in acl["mapped_luns"].as_array().unwrap() {
        assert_eq!(
            keys(m),
            set(&["write_protect", "index", "tpg_lun", "alias"])
        );
    }

    // A loopback TPG: its attrib/fabric_prot_type, no enable file (always true), and
    // never a nexus (TPG.dump has no such key).
    let lg = &target(&v, "loopback", LOOP)["tpgs"][0];
    assert_eq!(
        keys(lg),
        set(&[
            "attributes",
            "tag",
            "enable",
            "luns",
            "portals",
            "node_acls"
        ])
    );
    assert_eq!(lg["enable"], true);

    // Storage objects: StorageObject.dump (attributes, name, plugin, alua_tpgs) plus
    // the plugin's own keys.
    let common = ["attributes", "name", "plugin", "alua_tpgs"];
    let with = |more: &[&str]| {
        let mut s = set(&common);
        s.extend(more.iter().map(|k| (*k).to_owned()));
        s
    };
    let cases: [(&str, &[&str]); 6] = [
        ("disk1", &["write_back", "wwn", "dev", "size", "aio"]),
        ("blk", &["write_back", "readonly", "wwn", "dev"]),
        // RDMCPStorageObject.dump: nullio only when enabled.
        ("ram", &["wwn", "size", "nullio"]),
        // PSCSIStorageObject.dump: dev only (no wwn).
        ("pt", &["dev"]),
        (
            "tcmu",
            &["wwn", "size", "config", "hw_max_sectors", "control"],
        ),
        ("disk2", &["write_back", "wwn", "dev", "size", "aio"]),
    ];
    for (name, more) in cases {
        assert_eq!(keys(so(&v, name)), with(more), "{name}");
    }
    // ALUATargetPortGroup.dump: name, tg_pt_gp_id and every alua_rw_params entry.
    for grp in so(&v, "disk1")["alua_tpgs"].as_array().unwrap() {
        assert_eq!(
            keys(grp),
            set(&[
                "name",
                "tg_pt_gp_id",
                "alua_access_state",
                "alua_access_status",
                "alua_write_metadata",
                "alua_access_type",
                "preferred",
                "nonop_delay_msecs",
                "trans_delay_msecs",
                "implicit_trans_secs",
                "alua_support_offline",
                "alua_support_standby",
                "alua_support_transitioning",
                "alua_support_active_nonoptimized",
                "alua_support_unavailable",
                "alua_support_active_optimized"
            ])
        );
    }
}

#[test]
fn target_parameters_are_read_as_text() {
    let env = Env::new();
    env.lio
        .apply(&full_config(&env), &mut |_, _| {})
        .expect("apply");
    // Every fabric's target has param/cmd_completion_affinity (kernel 5.14+), -1
    // (SE_COMPL_AFFINITY_CPUID) by default; rtslib's get_parameter returns text.
    let live = env.lio.dump().unwrap();
    assert_eq!(live.targets.len(), 3);
    for t in &live.targets {
        assert_eq!(
            t.parameters.get("cmd_completion_affinity"),
            Some(&ConfigValue::Str("-1".into())),
            "{}",
            t.wwn
        );
        assert!(t.attributes.is_empty(), "no fabric has <wwn>/attrib");
    }
    let v = saved(&env);
    assert_eq!(
        target(&v, "vhost", "naa.5001405ccccccccc")["parameters"]["cmd_completion_affinity"],
        "-1"
    );
}

fn two_targets(iscsi_affinity: &str, loop_affinity: &str) -> String {
    format!(
        r#"{{"storage_objects": [{{"plugin": "ramdisk", "name": "r", "size": 1048576}}],
        "targets": [
          {{"fabric": "iscsi", "wwn": "{IQN}", "parameters": {{"cmd_completion_affinity": "{iscsi_affinity}"}},
            "tpgs": [{{"tag": 1, "luns": [{{"index": 0, "storage_object": "/backstores/ramdisk/r"}}]}}]}},
          {{"fabric": "loopback", "wwn": "{LOOP}", "parameters": {{"cmd_completion_affinity": "{loop_affinity}"}},
            "tpgs": [{{"tag": 1, "luns": [{{"index": 0, "storage_object": "/backstores/ramdisk/r"}}]}}]}}
        ]}}"#
    )
}

#[test]
fn target_parameters_in_a_file_are_written_on_restore_and_apply() {
    let env = Env::new();
    restore(&env, &two_targets("2", "-2")).expect("restore");
    assert_eq!(
        read(&env, &format!("iscsi/{IQN}/param/cmd_completion_affinity")),
        "2"
    );
    assert_eq!(
        read(
            &env,
            &format!("loopback/{LOOP}/param/cmd_completion_affinity")
        ),
        "-2"
    );
    let v = saved(&env);
    assert_eq!(
        target(&v, "iscsi", IQN)["parameters"]["cmd_completion_affinity"],
        "2"
    );
    // The same file again changes nothing; another value is one step.
    let same = SaveConfig::from_json(&two_targets("2", "-2")).unwrap();
    assert!(env.lio.plan_apply(&same).unwrap().is_empty());
    let other = SaveConfig::from_json(&two_targets("0", "-2")).unwrap();
    let plan = env.lio.plan_apply(&other).unwrap();
    assert_eq!(plan.ops.len(), 1, "{plan}");
    assert!(matches!(
        &plan.ops[0],
        Op::SetTargetParameter { name, value, .. }
            if name == "cmd_completion_affinity" && value.to_configfs() == "0"
    ));
    assert_eq!(
        plan.ops[0].to_string(),
        format!("set parameter /iscsi/{IQN} cmd_completion_affinity=0")
    );
    env.lio.apply(&other, &mut |_, _| {}).expect("apply");
    assert_eq!(
        read(&env, &format!("iscsi/{IQN}/param/cmd_completion_affinity")),
        "0"
    );
}

#[test]
fn a_target_parameter_the_kernel_refuses_rolls_the_restore_back() {
    let env = Env::new();
    // Load the fabric modules first (their directories stay, like modprobe).
    restore(&env, &two_targets("-1", "-1")).expect("restore");
    env.lio.clear(&mut |_, _| {}).unwrap();
    let before = env.snapshot();
    // 99 is neither -1, -2 nor an online CPU of the fake kernel (4 CPUs): EINVAL.
    let err = restore(&env, &two_targets("99", "-1")).unwrap_err();
    assert!(err.rolled_back_cleanly(), "{err}");
    assert!(err.to_string().contains("cmd_completion_affinity"), "{err}");
    assert_eq!(before, env.snapshot());
}

#[test]
fn a_target_parameter_this_kernel_lacks_is_skipped() {
    // A file saved on a 5.14+ kernel restored where <wwn>/param has no such file
    // (rtslib's restore never writes target parameters at all).
    let env = Env::new();
    restore(&env, &two_targets("-1", "-1")).expect("restore");
    let p = env
        .root()
        .join(format!("iscsi/{IQN}/param/cmd_completion_affinity"));
    std::fs::remove_file(&p).unwrap();
    let other = SaveConfig::from_json(&two_targets("3", "-1")).unwrap();
    env.lio
        .apply(&other, &mut |_, _| {})
        .expect("skipped, not failed");
    assert!(!p.exists());
    assert!(env.lio.dump().unwrap().targets[0].parameters.is_empty());
}

#[test]
fn loopback_nexus_is_created_on_restore_but_never_saved() {
    let env = Env::new();
    let with_nexus = format!(
        r#"{{"storage_objects": [{{"plugin": "ramdisk", "name": "r", "size": 1048576}}],
        "targets": [{{"fabric": "loopback", "wwn": "{LOOP}",
          "tpgs": [{{"tag": 1, "nexus": "naa.5001405bbbbbbbbb",
                    "luns": [{{"index": 0, "storage_object": "/backstores/ramdisk/r"}}]}}]}}]}}"#
    );
    restore(&env, &with_nexus).expect("restore");
    // The file's nexus is used (rtslib's TPG.setup accepts the key) ...
    assert_eq!(
        read(&env, &format!("loopback/{LOOP}/tpgt_1/nexus")),
        "naa.5001405bbbbbbbbb"
    );
    // ... the full state knows it, the saved form does not have the key.
    let state = env.lio.state().unwrap();
    assert_eq!(
        state.targets[0].tpgs[0].nexus.as_deref(),
        Some("naa.5001405bbbbbbbbb")
    );
    let text = env.lio.dump().unwrap().to_json().unwrap();
    assert!(!text.contains("nexus"), "{text}");
    // Re-applying the file keeps the TPG; a different nexus re-creates it.
    let cfg = SaveConfig::from_json(&with_nexus).unwrap();
    assert!(env.lio.plan_apply(&cfg).unwrap().is_empty());
    let moved = SaveConfig::from_json(&with_nexus.replace("bbbbbbbbb", "ddddddddd")).unwrap();
    let plan = env.lio.plan_apply(&moved).unwrap().to_string();
    assert!(
        plan.contains(&format!(
            "create TPG /loopback/{LOOP}/tpg1 (nexus naa.5001405ddddddddd)"
        )),
        "{plan}"
    );

    // Restoring the saved form (no nexus) generates one, like rtslib's TPG().
    env.lio.clear(&mut |_, _| {}).unwrap();
    restore(&env, &text).expect("restore of the saved form");
    let n = read(&env, &format!("loopback/{LOOP}/tpgt_1/nexus"));
    assert!(n.starts_with("naa.5001405") && n.len() == 20, "{n}");
    assert_eq!(env.lio.dump().unwrap().to_json().unwrap(), text);
}

#[test]
fn a_lun_without_alua_saves_a_null_group_like_rtslib() {
    // LUN.dump writes alua_tg_pt_gp_name whatever the backstore; a pscsi device has
    // no ALUA (alua_support=0), so rtslib writes null.
    let env = Env::new();
    env.lio
        .apply(&full_config(&env), &mut |_, _| {})
        .expect("apply");
    let v = saved(&env);
    let vh = &target(&v, "vhost", "naa.5001405ccccccccc")["tpgs"][0]["luns"][0];
    assert_eq!(vh.get("alua_tg_pt_gp_name"), Some(&Value::Null), "{vh}");
    let lun0 = &target(&v, "iscsi", IQN)["tpgs"][0]["luns"][0];
    assert_eq!(lun0["alua_tg_pt_gp_name"], "ao");
    let lun1 = &target(&v, "iscsi", IQN)["tpgs"][0]["luns"][1];
    assert_eq!(lun1["alua_tg_pt_gp_name"], "default_tg_pt_gp");
    // The null survives load -> save of the saved file.
    let cfg = SaveConfig::from_json(&v.to_string()).unwrap();
    env.lio.clear(&mut |_, _| {}).unwrap();
    env.lio.restore(&cfg, false, &mut |_, _| {}).unwrap();
    assert_eq!(saved(&env), v);
}
