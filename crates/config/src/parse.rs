//! Parsing saveconfig.json text into the model and printing it back.
//!
//! Parsing is two-staged: the text becomes a `serde_json::Value` first (syntax errors
//! carry line and column), then the typed model; when the typed step fails the value
//! is walked to name the exact element at fault (`targets[0].tpgs[1].luns[2]`).

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::model::{
    FabricModule, Lun, MappedLun, NodeAcl, Portal, SaveConfig, StorageObject, Target, Tpg,
};
use crate::Error;

/// Parses saveconfig.json text.
pub fn from_str(text: &str) -> Result<SaveConfig, Error> {
    let value: Value = serde_json::from_str(text).map_err(|source| Error::Syntax {
        file: None,
        line: source.line(),
        column: source.column(),
        source,
    })?;
    from_value(value)
}

/// Converts an already-parsed JSON value into the model.
pub fn from_value(value: Value) -> Result<SaveConfig, Error> {
    match serde_json::from_value::<SaveConfig>(value.clone()) {
        Ok(cfg) => Ok(cfg),
        Err(e) => {
            let (path, message) = locate(&value).unwrap_or_else(|| (String::new(), e.to_string()));
            Err(Error::Structure {
                file: None,
                path,
                message,
            })
        }
    }
}

fn check<T: DeserializeOwned>(v: &Value) -> Result<(), String> {
    T::deserialize(v).map(|_| ()).map_err(|e| e.to_string())
}

fn array<'a>(v: &'a Value, key: &str, path: &str) -> Result<&'a [Value], (String, String)> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err((
            join(path, key),
            format!("`{key}` must be an array, found {}", kind(other)),
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Finds the innermost element that fails to convert, with the converter's message.
fn locate(v: &Value) -> Option<(String, String)> {
    if !v.is_object() {
        return Some((
            String::new(),
            format!("the top level must be a JSON object, found {}", kind(v)),
        ));
    }
    let r = (|| -> Result<(), (String, String)> {
        for (i, fm) in array(v, "fabric_modules", "")?.iter().enumerate() {
            let p = format!("fabric_modules[{i}]");
            check::<FabricModule>(fm).map_err(|m| (p, m))?;
        }
        for (i, so) in array(v, "storage_objects", "")?.iter().enumerate() {
            let p = format!("storage_objects[{i}]");
            check::<StorageObject>(so).map_err(|m| (p, m))?;
        }
        for (i, t) in array(v, "targets", "")?.iter().enumerate() {
            let tp = format!("targets[{i}]");
            for (j, tpg) in array(t, "tpgs", &tp)?.iter().enumerate() {
                let gp = format!("{tp}.tpgs[{j}]");
                for (k, x) in array(tpg, "luns", &gp)?.iter().enumerate() {
                    check::<Lun>(x).map_err(|m| (format!("{gp}.luns[{k}]"), m))?;
                }
                for (k, x) in array(tpg, "portals", &gp)?.iter().enumerate() {
                    check::<Portal>(x).map_err(|m| (format!("{gp}.portals[{k}]"), m))?;
                }
                for (k, acl) in array(tpg, "node_acls", &gp)?.iter().enumerate() {
                    let ap = format!("{gp}.node_acls[{k}]");
                    for (l, x) in array(acl, "mapped_luns", &ap)?.iter().enumerate() {
                        check::<MappedLun>(x).map_err(|m| (format!("{ap}.mapped_luns[{l}]"), m))?;
                    }
                    check::<NodeAcl>(acl).map_err(|m| (ap, m))?;
                }
                check::<Tpg>(tpg).map_err(|m| (gp, m))?;
            }
            check::<Target>(t).map_err(|m| (tp, m))?;
        }
        check::<SaveConfig>(v).map_err(|m| (String::new(), m))
    })();
    r.err()
}

/// Recursively sorts object keys, like Python's `json.dump(sort_keys=True)`.
fn sort_keys(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sort_keys(v)))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

/// Prints the configuration the way targetcli's `saveconfig` does: keys sorted,
/// two-space indentation, trailing newline.
pub fn to_string_pretty(cfg: &SaveConfig) -> Result<String, Error> {
    let value = serde_json::to_value(cfg).map_err(Error::Serialize)?;
    let mut text = serde_json::to_string_pretty(&sort_keys(value)).map_err(Error::Serialize)?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_error_has_position() {
        let e = from_str("{\n  \"targets\": [,]\n}").unwrap_err();
        match e {
            Error::Syntax { line, .. } => assert_eq!(line, 2),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn structure_error_names_the_element() {
        let text = r#"{"targets":[{"wwn":"iqn.2003-01.a.b:c","fabric":"iscsi","tpgs":[
            {"tag":1,"luns":[{"index":0,"storage_object":"/backstores/fileio/a"},
                             {"index":"x","storage_object":"/backstores/fileio/b"}]}]}]}"#;
        match from_str(text).unwrap_err() {
            Error::Structure { path, message, .. } => {
                assert_eq!(path, "targets[0].tpgs[0].luns[1]");
                assert!(message.contains("invalid type"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
        match from_str(r#"{"storage_objects":[{"plugin":"fileio","name":"a"}]}"#).unwrap_err() {
            Error::Structure { path, message, .. } => {
                assert_eq!(path, "storage_objects[0]");
                assert!(message.contains("`dev`"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
        match from_str(r#"{"targets":{}}"#).unwrap_err() {
            Error::Structure { path, .. } => assert_eq!(path, "targets"),
            other => panic!("unexpected {other:?}"),
        }
        match from_str("[]").unwrap_err() {
            Error::Structure { path, message, .. } => {
                assert_eq!(path, "");
                assert!(message.contains("top level"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn output_is_sorted_with_trailing_newline() {
        let cfg = from_str(
            r#"{"targets":[],"storage_objects":[{"plugin":"ramdisk","size":8192,"name":"r","alua_tpgs":[]}],"zzz":1,"fabric_modules":[]}"#,
        )
        .unwrap();
        let text = to_string_pretty(&cfg).unwrap();
        assert_eq!(
            text,
            "{\n  \"fabric_modules\": [],\n  \"storage_objects\": [\n    {\n      \"alua_tpgs\": [],\n      \"name\": \"r\",\n      \"plugin\": \"ramdisk\",\n      \"size\": 8192\n    }\n  ],\n  \"targets\": [],\n  \"zzz\": 1\n}\n"
        );
    }
}
