//! Property tests of the saveconfig.json parser: arbitrary input never panics, and
//! anything accepted survives parse → serialize → parse unchanged.

use proptest::prelude::*;
use rustio_config::parse::{from_str, from_value, to_string_pretty};
use rustio_config::validate::validate;
use rustio_config::wwn::{validate_iscsi_name, validate_unit_serial};
use serde_json::{Map, Value};

/// Keys of the saveconfig format, so random objects often hit real code paths.
const KEYS: &[&str] = &[
    "fabric_modules",
    "storage_objects",
    "targets",
    "plugin",
    "name",
    "dev",
    "size",
    "write_back",
    "readonly",
    "nullio",
    "config",
    "hw_max_sectors",
    "control",
    "wwn",
    "attributes",
    "alua_tpgs",
    "tg_pt_gp_id",
    "alua_access_state",
    "fabric",
    "tpgs",
    "tag",
    "enable",
    "parameters",
    "luns",
    "index",
    "storage_object",
    "alias",
    "portals",
    "ip_address",
    "port",
    "iser",
    "offload",
    "node_acls",
    "node_wwn",
    "mapped_luns",
    "tpg_lun",
    "write_protect",
    "chap_userid",
    "chap_password",
    "chap_mutual_userid",
    "chap_mutual_password",
    "nexus",
    "discovery_enable_auth",
    "discovery_userid",
    "x",
];

const STRINGS: &[&str] = &[
    "fileio",
    "block",
    "iblock",
    "ramdisk",
    "rd_mcp",
    "pscsi",
    "user",
    "rbd",
    "iscsi",
    "loopback",
    "vhost",
    "/backstores/fileio/a",
    "/backstores/ramdisk/r",
    "/tmp/a",
    "iqn.2003-01.org.linux-iscsi.h.x8664:sn.0123456789ab",
    "naa.5001405123456789",
    "0.0.0.0",
    "[::1]",
    "a",
    "",
    "NULL",
    "file/cfg",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u64..70000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        proptest::sample::select(STRINGS).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        4 => proptest::sample::select(KEYS).prop_map(str::to_owned),
                        1 => "[a-z_]{1,8}",
                    ],
                    inner
                ),
                0..8
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

/// Well-formed configurations (structurally valid, not necessarily semantically).
fn config_value() -> impl Strategy<Value = Value> {
    let so = (
        proptest::sample::select(&["fileio", "block", "ramdisk", "pscsi", "user"][..]),
        "[a-z0-9]{1,6}",
        1u64..1 << 40,
        any::<bool>(),
        prop::option::of("[a-f0-9-]{8,36}"),
        prop::collection::btree_map(
            "[a-z_]{1,10}",
            prop_oneof![
                any::<i64>().prop_map(Value::from),
                "[A-Za-z0-9,]{0,8}".prop_map(Value::from)
            ],
            1..4,
        ),
    )
        .prop_map(|(plugin, name, size, flag, wwn, attrs)| {
            let mut m = Map::new();
            m.insert("plugin".into(), plugin.into());
            m.insert("name".into(), name.into());
            match plugin {
                "fileio" => {
                    m.insert("dev".into(), "/tmp/f".into());
                    m.insert("size".into(), size.into());
                    m.insert("write_back".into(), flag.into());
                }
                "block" => {
                    m.insert("dev".into(), "/dev/sdz".into());
                    m.insert("readonly".into(), flag.into());
                }
                "ramdisk" => {
                    m.insert("size".into(), size.into());
                    if flag {
                        m.insert("nullio".into(), true.into());
                    }
                }
                "pscsi" => {
                    m.insert("dev".into(), "1:0:0:0".into());
                }
                _ => {
                    m.insert("config".into(), "file/x".into());
                    m.insert("size".into(), size.into());
                    m.insert("hw_max_sectors".into(), 128.into());
                }
            }
            if let Some(w) = wwn {
                m.insert("wwn".into(), w.into());
            }
            m.insert(
                "attributes".into(),
                Value::Object(attrs.into_iter().collect()),
            );
            m.insert("alua_tpgs".into(), Value::Array(vec![]));
            if flag {
                m.insert("unknown_future_key".into(), Value::from(vec![1, 2]));
            }
            Value::Object(m)
        });
    let mlun = (0u64..300, 0u64..300, any::<bool>()).prop_map(|(i, t, wp)| {
        serde_json::json!({"index": i, "tpg_lun": t, "write_protect": wp, "alias": "abcdef0123"})
    });
    let acl = ("[a-z0-9]{1,8}", prop::collection::vec(mlun, 0..3), prop::option::of("[a-z]{1,8}"))
        .prop_map(|(n, m, user)| {
            let mut v = serde_json::json!({"node_wwn": format!("iqn.1993-08.org.debian:01:{n}"), "mapped_luns": m, "attributes": {"dataout_timeout": 3}});
            if let Some(u) = user {
                v["chap_userid"] = u.into();
                v["chap_password"] = "0123456789abcdef".into();
            }
            v
        });
    let lun = (0u64..65536, "[a-z0-9]{1,6}").prop_map(|(i, n)| {
        serde_json::json!({"index": i, "storage_object": format!("/backstores/fileio/{n}"), "alias": "0123456789", "alua_tg_pt_gp_name": "default_tg_pt_gp"})
    });
    let portal = (0u64..65536, any::<bool>()).prop_map(|(port, v6)| {
        serde_json::json!({"ip_address": if v6 { "[::0]" } else { "0.0.0.0" }, "port": port, "iser": false, "offload": false})
    });
    let tpg = (
        1u64..65536,
        any::<bool>(),
        prop::collection::vec(lun, 0..4),
        prop::collection::vec(portal, 0..3),
        prop::collection::vec(acl, 0..3),
    )
        .prop_map(|(tag, en, luns, portals, acls)| {
            serde_json::json!({"tag": tag, "enable": en, "luns": luns, "portals": portals, "node_acls": acls,
                "attributes": {"authentication": 0}, "parameters": {"AuthMethod": "CHAP,None"}})
        });
    let target = ("[a-z0-9]{1,12}", prop::collection::vec(tpg, 0..3)).prop_map(|(s, tpgs)| {
        serde_json::json!({"fabric": "iscsi", "wwn": format!("iqn.2003-01.org.example:{s}"), "tpgs": tpgs})
    });
    (
        prop::collection::vec(so, 0..5),
        prop::collection::vec(target, 0..3),
        any::<bool>(),
    )
        .prop_map(|(sos, targets, disc)| {
            let fms = if disc {
                serde_json::json!([{"name": "iscsi", "discovery_enable_auth": true, "discovery_userid": "u", "discovery_password": "p"}])
            } else {
                serde_json::json!([])
            };
            serde_json::json!({"fabric_modules": fms, "storage_objects": sos, "targets": targets})
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_json_never_panics_and_accepted_input_round_trips(v in json()) {
        if let Ok(cfg) = from_value(v) {
            let _ = validate(&cfg);
            let text = to_string_pretty(&cfg).expect("accepted configs serialize");
            let again = from_str(&text).expect("our own output parses");
            prop_assert_eq!(&again, &cfg);
            prop_assert_eq!(to_string_pretty(&again).unwrap(), text);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(s in ".{0,200}") {
        let _ = from_str(&s);
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(s) = std::str::from_utf8(&b) {
            let _ = from_str(s);
        }
    }

    #[test]
    fn well_formed_configs_round_trip(v in config_value()) {
        let text = serde_json::to_string(&v).unwrap();
        let cfg = from_str(&text).expect("generated configs are well-formed");
        let _ = validate(&cfg);
        let out = to_string_pretty(&cfg).unwrap();
        let again = from_str(&out).unwrap();
        prop_assert_eq!(&again, &cfg);
        // Nothing is dropped: the JSON values agree after key sorting.
        let reparsed: Value = serde_json::from_str(&out).unwrap();
        prop_assert_eq!(reparsed, serde_json::from_str::<Value>(&text).unwrap());
    }

    #[test]
    fn name_validators_never_panic(s in "\\PC{0,260}") {
        let _ = validate_iscsi_name(&s);
        let _ = validate_unit_serial(&s);
    }
}
