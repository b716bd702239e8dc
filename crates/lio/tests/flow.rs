//! The whole read / plan / apply / rollback flow against the fake kernel.

mod common;

use common::{full_config, Env};
use rustio_config::{SaveConfig, StorageObject};
use rustio_lio::fake::{Fault, FaultOp};
use rustio_lio::plan::diff;
use rustio_lio::{Error, Lio};

fn apply(lio: &Lio, cfg: &SaveConfig) -> rustio_lio::Plan {
    lio.apply(cfg, &mut |_, _| {})
        .unwrap_or_else(|e| panic!("apply failed: {e:#?}"))
}

#[test]
fn apply_full_config_then_dump_matches_and_reapply_is_empty() {
    let env = Env::new();
    let desired = full_config(&env);
    let plan = apply(&env.lio, &desired);
    assert!(!plan.is_empty());

    let live = env.lio.dump().unwrap();
    // Everything asked for is there.
    assert_eq!(live.storage_objects.len(), 6);
    let names: Vec<_> = live.storage_objects.iter().map(|s| s.path()).collect();
    assert_eq!(
        names,
        [
            "/backstores/block/blk",
            "/backstores/fileio/disk1",
            "/backstores/fileio/disk2",
            "/backstores/pscsi/pt",
            "/backstores/ramdisk/ram",
            "/backstores/user/tcmu",
        ]
    );
    let disk1 = live.storage_object("fileio", "disk1").unwrap();
    assert_eq!(disk1.wwn(), Some("11111111-2222-4333-8444-555555555555"));
    let StorageObject::Fileio(f) = disk1 else {
        panic!()
    };
    assert_eq!(f.write_back, Some(true));
    assert_eq!(f.size, Some(1 << 20));
    assert_eq!(f.common.attributes["queue_depth"].to_configfs(), "64");
    assert_eq!(
        f.common.attributes["emulate_write_cache"].to_configfs(),
        "1"
    );
    let ao = f.common.alua_tpgs.iter().find(|g| g.name == "ao").unwrap();
    assert_eq!(
        (ao.tg_pt_gp_id, ao.alua_access_type, ao.preferred),
        (10, Some(1), Some(1))
    );
    // The kernel created disk2's backing file (O_CREAT).
    assert!(env.file("disk2.img").exists());
    let StorageObject::Ramdisk(r) = live.storage_object("ramdisk", "ram").unwrap() else {
        panic!()
    };
    assert_eq!((r.size, r.nullio), (8 << 20, Some(true)));
    let StorageObject::User(u) = live.storage_object("user", "tcmu").unwrap() else {
        panic!()
    };
    assert_eq!(u.config.as_deref(), Some("file/test_1"));
    assert_eq!(u.hw_max_sectors, Some(128));

    let t = live
        .target(
            "iscsi",
            "iqn.2003-01.org.linux-iscsi.test.x8664:sn.0123456789ab",
        )
        .unwrap();
    assert_eq!(t.tpgs.len(), 2);
    let g = &t.tpgs[0];
    assert_eq!(g.enable, Some(true));
    assert_eq!(t.tpgs[1].enable, Some(false));
    assert_eq!(g.parameters["MaxConnections"].to_configfs(), "2");
    assert_eq!(g.luns[0].alias.as_deref(), Some("aaaaaaaaaa"));
    assert_eq!(g.luns[0].alua_tg_pt_gp_name.as_deref(), Some("ao"));
    assert_eq!(g.portals.len(), 2);
    assert_eq!(g.portals[1].ip_address, "[::1]");
    assert_eq!(g.portals[1].iser, Some(true));
    let acl = &g.node_acls[0];
    assert_eq!(acl.auth.chap_userid.as_deref(), Some("alice"));
    assert_eq!(acl.mapped_luns[1].write_protect, Some(true));
    assert_eq!(acl.mapped_luns[1].tpg_lun, 2);
    // The nexus is created as the file says (or generated), but the saveconfig form
    // leaves it out like rtslib's TPG.dump; the full state has it.
    for t in live.targets.iter().filter(|t| t.fabric != "iscsi") {
        assert!(t.tpgs.iter().all(|g| g.nexus.is_none()), "{}", t.wwn);
    }
    let state = env.lio.state().unwrap();
    let lb = state.target("loopback", "naa.5001405aaaaaaaaa").unwrap();
    assert_eq!(lb.tpgs[0].nexus.as_deref(), Some("naa.5001405bbbbbbbbb"));
    let vh = state.target("vhost", "naa.5001405ccccccccc").unwrap();
    assert!(
        vh.tpgs[0]
            .nexus
            .as_deref()
            .unwrap()
            .starts_with("naa.5001405"),
        "generated nexus"
    );
    assert_eq!(
        live.fabric_modules[0].discovery_userid.as_deref(),
        Some("disc")
    );

    // Status: exported objects are ACTIVATED.
    let tree = env.lio.live().unwrap();
    let d1 = tree
        .storage_objects
        .iter()
        .find(|s| s.config.name() == "disk1")
        .unwrap();
    assert_eq!(d1.status, "activated");
    assert_eq!(
        d1.users,
        ["/iscsi/iqn.2003-01.org.linux-iscsi.test.x8664:sn.0123456789ab/tpg1/luns/lun0"]
    );

    // Applying the same configuration again, or the dump itself, changes nothing.
    let again = env.lio.plan_apply(&desired).unwrap();
    assert!(again.is_empty(), "{again}");
    let again = env.lio.plan_apply(&live).unwrap();
    assert!(again.is_empty(), "{again}");
}

#[test]
fn save_clear_restore_save_is_identical() {
    let env = Env::new();
    apply(&env.lio, &full_config(&env));
    let first = env.lio.dump().unwrap().to_json().unwrap();
    env.lio.clear(&mut |_, _| {}).unwrap();
    let empty = env.lio.dump().unwrap();
    assert!(
        empty.storage_objects.is_empty()
            && empty.targets.is_empty()
            && empty.fabric_modules.is_empty()
    );
    // HBAs are gone too.
    assert_eq!(
        std::fs::read_dir(env.root().join("core")).unwrap().count(),
        1,
        "only core/alua remains"
    );
    let cfg = SaveConfig::from_json(&first).unwrap();
    env.lio.restore(&cfg, false, &mut |_, _| {}).unwrap();
    let second = env.lio.dump().unwrap().to_json().unwrap();
    assert_eq!(first, second);
}

#[test]
fn restore_refuses_existing_objects_without_clear() {
    let env = Env::new();
    let cfg = full_config(&env);
    apply(&env.lio, &cfg);
    let before = env.snapshot();
    let e = env
        .lio
        .restore(&cfg, false, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("already present: storage object /backstores/fileio/disk1"),
        "{e}"
    );
    assert!(e.contains("--clear-existing"), "{e}");
    assert_eq!(before, env.snapshot());
    // With clear_existing it goes through and ends in the same state.
    let dump = env.lio.dump().unwrap();
    env.lio.restore(&dump, true, &mut |_, _| {}).unwrap();
    assert_eq!(
        env.lio.dump().unwrap().to_json().unwrap(),
        dump.to_json().unwrap()
    );
}

#[test]
fn failing_step_rolls_back_to_the_previous_tree() {
    let env = Env::new();
    let base = full_config(&env);
    apply(&env.lio, &base);
    let before = env.snapshot();
    let before_dump = env.lio.dump().unwrap();

    // Desired: a new LUN on a new fileio object, plus a block backstore whose device
    // does not exist (fails halfway, after other steps succeeded), plus deletions.
    let mut desired = before_dump.clone();
    desired.targets.retain(|t| t.fabric != "vhost");
    desired.storage_objects.retain(|s| s.name() != "pt");
    let extra = format!(
        r#"{{"storage_objects": [
            {{"plugin": "fileio", "name": "new1", "dev": "{}", "size": 65536}},
            {{"plugin": "block", "name": "zz_missing", "dev": "{}"}}]}}"#,
        env.file("new1.img").display(),
        env.file("no-such-device").display()
    );
    let extra = SaveConfig::from_json(&extra).unwrap();
    desired.storage_objects.extend(extra.storage_objects);
    desired.targets[0].tpgs[0].luns.push(rustio_config::Lun {
        index: 9,
        storage_object: "/backstores/fileio/new1".into(),
        ..Default::default()
    });

    let mut steps = Vec::new();
    let err = env
        .lio
        .apply(&desired, &mut |i, op| steps.push(format!("{i}: {op}")))
        .unwrap_err();
    let text = format!("{err}");
    assert!(
        text.contains("create storage object /backstores/block/zz_missing"),
        "{text}"
    );
    assert!(text.contains("previous configuration restored"), "{text}");
    assert!(err.rolled_back_cleanly());
    let Error::StepFailed { source, step, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(*step > 1, "failed halfway: {steps:?}");
    assert!(source.to_string().contains("does not exist"), "{source}");
    // Exactly the previous tree, including the deleted vhost target and pscsi object.
    assert_eq!(env.lio.dump().unwrap(), before_dump);
    let after = env.snapshot();
    let differences: Vec<_> = before
        .iter()
        .filter(|l| !after.contains(l))
        .chain(after.iter().filter(|l| !before.contains(l)))
        .filter(|l| {
            !l.contains("nexus") && !l.contains("hba_info") && !l.contains("vpd_unit_serial")
        })
        .collect();
    // HBA indexes and generated names may differ after a re-create; nothing else.
    for d in &differences {
        assert!(
            d.contains("core/") || d.contains("/vhost/"),
            "unexpected difference {d}"
        );
    }
}

#[test]
fn injected_kernel_failure_mid_plan_rolls_back() {
    let env = Env::new();
    apply(&env.lio, &full_config(&env));
    let before = env.lio.dump().unwrap();
    let mut desired = before.clone();
    // Change an attribute, add a portal, add an ACL: the portal's mkdir will fail.
    let g = &mut desired.targets[0].tpgs[0];
    g.attributes.insert("login_timeout".into(), 20.into());
    g.portals.push(rustio_config::Portal {
        ip_address: "127.0.0.1".into(),
        port: 3262,
        ..Default::default()
    });
    g.node_acls.push(rustio_config::NodeAcl {
        node_wwn: "iqn.1993-08.org.debian:01:cccc".into(),
        ..Default::default()
    });
    env.kernel.inject(Fault {
        op: FaultOp::Mkdir,
        path_suffix: "np/127.0.0.1:3262".into(),
        errno: nix::errno::Errno::EADDRINUSE,
        count: 1,
    });
    let err = env.lio.apply(&desired, &mut |_, _| {}).unwrap_err();
    assert!(err.rolled_back_cleanly(), "{err}");
    assert!(err.to_string().contains("create portal"), "{err}");
    assert_eq!(env.lio.dump().unwrap(), before);
}

#[test]
fn concurrent_storage_object_creation_gets_distinct_hbas() {
    let env = Env::new();
    let root = env.root();
    let mut handles = Vec::new();
    for t in 0..4 {
        let kernel = env.kernel.clone();
        let root = root.clone();
        handles.push(std::thread::spawn(move || {
            let lio = Lio::with_backend(&root, kernel).unwrap();
            for i in 0..5 {
                let so = SaveConfig::from_json(&format!(
                    r#"{{"storage_objects":[{{"plugin":"ramdisk","name":"r{t}_{i}","size":4096}}]}}"#
                ))
                .unwrap()
                .storage_objects
                .remove(0);
                lio.create_storage_object(so).unwrap();
            }
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
    let tree = env.lio.live().unwrap();
    assert_eq!(tree.storage_objects.len(), 20);
    let mut hbas: Vec<_> = tree.storage_objects.iter().map(|s| s.hba.clone()).collect();
    hbas.sort();
    hbas.dedup();
    assert_eq!(hbas.len(), 20, "one HBA per storage object: {hbas:?}");
}

#[test]
fn plan_is_minimal_for_small_changes() {
    let env = Env::new();
    let cfg = full_config(&env);
    apply(&env.lio, &cfg);
    let cur = env.lio.dump().unwrap();
    let mut des = cur.clone();
    des.targets[0].tpgs[0].node_acls[0].mapped_luns[1].write_protect = Some(false);
    let plan = diff(&cur, &des);
    assert_eq!(plan.ops.len(), 1, "{plan}");
}

/// Found in the VM: target_core_user's `enable` store handler answers ENOENT when
/// tcmu-runner cannot open the handler's file. The attribute exists, so this is the
/// kernel rejecting the value, not an attribute missing from this kernel.
#[test]
fn enoent_from_an_existing_attribute_is_a_kernel_rejection() {
    let env = Env::new();
    let so = SaveConfig::from_json(
        r#"{"storage_objects":[{"plugin":"ramdisk","name":"r0","size":4096}]}"#,
    )
    .unwrap()
    .storage_objects
    .remove(0);
    env.kernel.inject(Fault {
        op: FaultOp::Write,
        path_suffix: "r0/enable".into(),
        errno: nix::errno::Errno::ENOENT,
        count: 1,
    });
    let err = env.lio.create_storage_object(so).unwrap_err();
    let mut msg = err.to_string();
    let mut cause = std::error::Error::source(&err);
    while let Some(c) = cause {
        msg = format!("{msg}: {c}");
        cause = c.source();
    }
    assert!(msg.contains("the kernel rejected \"1\""), "{msg}");
    assert!(!msg.contains("not provided by this kernel"), "{msg}");
    assert!(
        env.lio.live().unwrap().storage_objects.is_empty(),
        "rolled back"
    );
}
