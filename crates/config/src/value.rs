//! Scalar values of `attributes` / `parameters` maps.
//!
//! rtslib's `CFSNode.dump()` stores an attribute as an integer when the configfs text
//! parses as one and as a string otherwise; hand-written files also use booleans. All of
//! them end up as one line of text written to a configfs file.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One attribute or parameter value as found in saveconfig.json.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigValue {
    /// An integer that fits `i64` (what rtslib writes for numeric attributes).
    Int(i64),
    /// A non-negative integer above `i64::MAX`.
    UInt(u64),
    /// A boolean (written to configfs as `1` / `0`).
    Bool(bool),
    /// Any other text (for example iSCSI parameters such as `CRC32C,None`).
    Str(String),
}

impl ConfigValue {
    /// The text written to the configfs attribute file for this value.
    pub fn to_configfs(&self) -> String {
        match self {
            ConfigValue::Int(v) => v.to_string(),
            ConfigValue::UInt(v) => v.to_string(),
            ConfigValue::Bool(true) => "1".to_owned(),
            ConfigValue::Bool(false) => "0".to_owned(),
            ConfigValue::Str(s) => s.clone(),
        }
    }

    /// Interprets text read from configfs the way rtslib's dump does: an integer when it
    /// parses as one, the (trimmed) text otherwise.
    pub fn from_configfs(text: &str) -> ConfigValue {
        let t = text.trim();
        if let Ok(v) = t.parse::<i64>() {
            ConfigValue::Int(v)
        } else if let Ok(v) = t.parse::<u64>() {
            ConfigValue::UInt(v)
        } else {
            ConfigValue::Str(t.to_owned())
        }
    }

    /// True when writing `self` and `other` to configfs would produce the same text.
    pub fn same_configfs_text(&self, other: &ConfigValue) -> bool {
        self.to_configfs().trim() == other.to_configfs().trim()
    }
}

impl fmt::Display for ConfigValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_configfs())
    }
}

impl From<&str> for ConfigValue {
    fn from(s: &str) -> Self {
        ConfigValue::Str(s.to_owned())
    }
}

impl From<i64> for ConfigValue {
    fn from(v: i64) -> Self {
        ConfigValue::Int(v)
    }
}

impl Serialize for ConfigValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ConfigValue::Int(v) => s.serialize_i64(*v),
            ConfigValue::UInt(v) => s.serialize_u64(*v),
            ConfigValue::Bool(v) => s.serialize_bool(*v),
            ConfigValue::Str(v) => s.serialize_str(v),
        }
    }
}

struct ValueVisitor;

impl Visitor<'_> for ValueVisitor {
    type Value = ConfigValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer, a boolean or a string")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<ConfigValue, E> {
        Ok(ConfigValue::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ConfigValue, E> {
        Ok(ConfigValue::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ConfigValue, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => ConfigValue::Int(i),
            Err(_) => ConfigValue::UInt(v),
        })
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<ConfigValue, E> {
        Err(E::custom(format_args!(
            "floating-point value {v} is not a valid configfs attribute value \
             (use an integer or a string)"
        )))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ConfigValue, E> {
        Ok(ConfigValue::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<ConfigValue, E> {
        Ok(ConfigValue::Str(v))
    }
}

impl<'de> Deserialize<'de> for ConfigValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

/// serde helper for boolean flags that hand-written files sometimes give as `0` / `1`.
pub(crate) mod flag {
    use super::*;

    struct FlagVisitor;

    impl<'de> Visitor<'de> for FlagVisitor {
        type Value = Option<bool>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a boolean (true/false) or 0/1")
        }

        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(v))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            match v {
                0 => Ok(Some(false)),
                1 => Ok(Some(true)),
                _ => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
            }
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            match v {
                0 => Ok(Some(false)),
                1 => Ok(Some(true)),
                _ => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
            }
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(FlagVisitor)
        }
    }

    /// Deserializes an optional boolean flag.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        d.deserialize_any(FlagVisitor)
    }

    /// Serializes an optional boolean flag (callers skip `None`).
    pub(crate) fn serialize<S: Serializer>(v: &Option<bool>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_bool(*b),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configfs_text_round_trip() {
        assert_eq!(ConfigValue::from_configfs("512\n"), ConfigValue::Int(512));
        assert_eq!(ConfigValue::from_configfs("-1"), ConfigValue::Int(-1));
        assert_eq!(
            ConfigValue::from_configfs("18446744073709551615"),
            ConfigValue::UInt(u64::MAX)
        );
        assert_eq!(
            ConfigValue::from_configfs("CRC32C,None\n"),
            ConfigValue::Str("CRC32C,None".into())
        );
        assert_eq!(ConfigValue::Bool(true).to_configfs(), "1");
        assert_eq!(ConfigValue::Bool(false).to_configfs(), "0");
        assert!(ConfigValue::Bool(true).same_configfs_text(&ConfigValue::Int(1)));
        assert!(!ConfigValue::Int(2).same_configfs_text(&ConfigValue::Int(1)));
    }

    #[test]
    fn json_forms() {
        let v: ConfigValue = serde_json::from_str("7").unwrap();
        assert_eq!(v, ConfigValue::Int(7));
        let v: ConfigValue = serde_json::from_str("\"Yes\"").unwrap();
        assert_eq!(v, ConfigValue::Str("Yes".into()));
        let v: ConfigValue = serde_json::from_str("true").unwrap();
        assert_eq!(v, ConfigValue::Bool(true));
        let err = serde_json::from_str::<ConfigValue>("1.5").unwrap_err();
        assert!(err.to_string().contains("floating-point"), "{err}");
        assert!(serde_json::from_str::<ConfigValue>("[1]").is_err());
    }
}
