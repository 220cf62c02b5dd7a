//! Request bodies, parsed at the edge: JSON naming the field of a problem,
//! YAML within a size budget, both refused with a named [`Rejection`].

use crate::core::rejection::Rejection;

/// Largest request body any function accepts (Stripe events are far smaller).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The raw body, refusing oversize ones before anything reads them.
pub fn within_limit(body: &[u8]) -> Result<&[u8], Rejection> {
    if body.len() > MAX_BODY_BYTES {
        return Err(too_large());
    }
    Ok(body)
}

pub fn too_large() -> Rejection {
    Rejection::too_large(format!("the request body exceeds {MAX_BODY_BYTES} bytes"))
}

/// Parses a JSON body into `T`, naming the position of a syntax error and
/// the field of any other problem. A number with a zero fraction (`5.0`,
/// `5e0`) is read as the integer it is: JSON Schema (and so
/// infra/openapi.yaml) counts it as one.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Rejection> {
    if body.len() > MAX_BODY_BYTES {
        return Err(too_large());
    }
    if body.is_empty() {
        return Err(Rejection::malformed("malformed_body", "the request body is empty; a JSON object is required"));
    }
    let mut value: serde_json::Value = serde_json::from_slice(body).map_err(|e| Rejection::malformed("malformed_body", format!("invalid JSON body: {e}")))?;
    whole_numbers_as_integers(&mut value);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." { String::new() } else { format!("{path}: ") };
        Rejection::malformed("malformed_body", format!("invalid JSON body: {at}{}", e.inner()))
    })
}

/// Every number with a zero fraction, within the range a double holds
/// exactly, as an integer.
fn whole_numbers_as_integers(v: &mut serde_json::Value) {
    use serde_json::Value;
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    match v {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() <= EXACT) {
                *v = if f < 0.0 { Value::from(f as i64) } else { Value::from(f as u64) };
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(whole_numbers_as_integers),
        _ => {}
    }
}

/// Reads a value already parsed (JSON or YAML) as `T`, naming the field of a problem.
pub fn parse_value<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Result<T, Rejection> {
    serde_path_to_error::deserialize(v.clone()).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." { String::new() } else { format!("{path}: ") };
        Rejection::malformed("malformed_body", format!("invalid request: {at}{}", e.inner()))
    })
}

/// Parses a YAML body (for people who write contracts by hand) into JSON
/// (numbers with a zero fraction as integers, as [`parse_json`] reads them),
/// within `limit` bytes of JSON once anchors and aliases are expanded: a
/// 50 KB document of nested aliases can otherwise expand to gigabytes.
/// Values are counted as they are built, so the work stops at the limit
/// (413 naming it) instead of after the expansion.
pub fn parse_yaml_bounded(body: &[u8], limit: usize) -> Result<serde_json::Value, Rejection> {
    use serde::de::DeserializeSeed;
    if body.is_empty() {
        return Err(Rejection::malformed("malformed_body", "the request body is empty"));
    }
    let budget = yaml_budget::Budget::new(limit);
    let result = yaml_budget::Bounded(&budget).deserialize(serde_norway::Deserializer::from_slice(body));
    match result {
        Ok(mut v) => {
            whole_numbers_as_integers(&mut v);
            Ok(v)
        }
        // (serde_norway also stops a document that repeats aliases too often.)
        Err(e) if budget.exceeded() || e.to_string().contains("repetition limit exceeded") => {
            Err(Rejection::too_large(format!("the YAML document expands to more than {limit} bytes of JSON (anchors and aliases count at their expanded size)")).with("limit_bytes", limit))
        }
        Err(e) => Err(Rejection::malformed("malformed_body", format!("invalid YAML body: {e}"))),
    }
}

mod yaml_budget {
    use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Value};
    use std::cell::Cell;
    use std::fmt;

    pub struct Budget {
        left: Cell<usize>,
        exceeded: Cell<bool>,
    }

    impl Budget {
        pub fn new(limit: usize) -> Self {
            Budget { left: Cell::new(limit), exceeded: Cell::new(false) }
        }
        pub fn exceeded(&self) -> bool {
            self.exceeded.get()
        }
        /// Takes `n` bytes (about what the value adds to the JSON text).
        fn spend<E: de::Error>(&self, n: usize) -> Result<(), E> {
            match self.left.get().checked_sub(n) {
                Some(left) => {
                    self.left.set(left);
                    Ok(())
                }
                None => {
                    self.exceeded.set(true);
                    Err(E::custom("the document expands beyond its size limit"))
                }
            }
        }
    }

    /// Builds a JSON value, spending from the budget for every part.
    pub struct Bounded<'a>(pub &'a Budget);

    impl<'de> DeserializeSeed<'de> for Bounded<'_> {
        type Value = Value;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Bounded<'_> {
        type Value = Value;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a YAML value")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
            self.0.spend(5)?;
            Ok(Value::Bool(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
            self.0.spend(20)?;
            Ok(v.into())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
            self.0.spend(20)?;
            Ok(v.into())
        }
        // Integers beyond 64 bits, as JSON bodies read them: a double.
        fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
            match i64::try_from(v) {
                Ok(v) => self.visit_i64(v),
                Err(_) => self.visit_f64(v as f64),
            }
        }
        fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => self.visit_f64(v as f64),
            }
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
            self.0.spend(24)?;
            Ok(serde_json::Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
            self.0.spend(v.len() + 2)?;
            Ok(Value::String(v.to_string()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
            self.0.spend(v.len() + 2)?;
            Ok(Value::String(v))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
            self.0.spend(4)?;
            Ok(Value::Null)
        }
        fn visit_none<E: de::Error>(self) -> Result<Value, E> {
            self.visit_unit()
        }
        fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            Bounded(self.0).deserialize(d)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            self.0.spend(2)?;
            let mut out = Vec::new();
            while let Some(v) = seq.next_element_seed(Bounded(self.0))? {
                self.0.spend(1)?;
                out.push(v);
            }
            Ok(Value::Array(out))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            self.0.spend(2)?;
            let mut out = Map::new();
            while let Some(key) = map.next_key_seed(Key(self.0))? {
                let value = map.next_value_seed(Bounded(self.0))?;
                out.insert(key, value);
            }
            Ok(Value::Object(out))
        }
    }

    /// A mapping key, as a string (JSON objects have string keys).
    struct Key<'a>(&'a Budget);

    impl<'de> DeserializeSeed<'de> for Key<'_> {
        type Value = String;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
            d.deserialize_string(self)
        }
    }

    impl<'de> Visitor<'de> for Key<'_> {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a mapping key")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            self.0.spend(v.len() + 4)?;
            Ok(v.to_string())
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
            self.0.spend(v.len() + 4)?;
            Ok(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::rejection::Kind;
    use crate::core::views::NewMember;

    #[test]
    fn parse_errors_name_the_problem() {
        let e = parse_json::<NewMember>(br#"{"user_id":"u1"}"#).unwrap_err();
        assert_eq!((e.kind, e.code), (Kind::Malformed, "malformed_body"));
        assert!(e.message.contains("email"), "{}", e.message);
        let e = parse_json::<NewMember>(br#"{"user_id":"u 1","email":"a@b"}"#).unwrap_err();
        assert!(e.message.contains("user_id"), "{}", e.message);
        let e = parse_json::<NewMember>(&vec![b' '; MAX_BODY_BYTES + 1]).unwrap_err();
        assert_eq!(e.kind, Kind::TooLarge);
        let e = parse_json::<NewMember>(b"").unwrap_err();
        assert_eq!(e.kind, Kind::Malformed);
    }

    #[test]
    fn a_number_with_a_zero_fraction_is_an_integer() {
        #[derive(Debug, serde::Deserialize)]
        struct Counts {
            seats: u32,
            delta: i64,
            ratio: f64,
        }
        let c = parse_json::<Counts>(br#"{"seats": 5.0, "delta": -2e0, "ratio": 0.5}"#).unwrap();
        assert_eq!((c.seats, c.delta, c.ratio), (5, -2, 0.5));
        let v = parse_json::<serde_json::Value>(br#"{"a": [1.0, 1.5, 1e300, -0.0]}"#).unwrap();
        assert_eq!(v, serde_json::json!({"a": [1, 1.5, 1e300, 0]}));
        let e = parse_json::<Counts>(br#"{"seats": 5.5, "delta": 0, "ratio": 0}"#).unwrap_err();
        assert!(e.message.contains("seats"), "the field is named: {}", e.message);
    }

    #[test]
    fn yaml_aliases_cannot_expand_past_the_limit() {
        let v = parse_yaml_bounded(b"a: 1\nb: [x, y]\nc: {d: true}\n", MAX_BODY_BYTES).unwrap();
        assert_eq!(v, serde_json::json!({"a": 1, "b": ["x", "y"], "c": {"d": true}}));
        // Ordinary anchors within the limit are fine.
        let v = parse_yaml_bounded(b"base: &b {tier: team}\nother: *b\n", MAX_BODY_BYTES).unwrap();
        assert_eq!(v["other"]["tier"], "team");
        // A billion laughs: nine levels of ten aliases, 10^9 strings from a few hundred bytes.
        let mut bomb = String::from("a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        for i in 1..10 {
            let p = i - 1;
            bomb.push_str(&format!("a{i}: &a{i} [*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p}]\n"));
        }
        assert!(bomb.len() < 1000);
        let started = std::time::Instant::now();
        let e = parse_yaml_bounded(bomb.as_bytes(), MAX_BODY_BYTES).unwrap_err();
        assert_eq!((e.kind, e.code), (Kind::TooLarge, "payload_too_large"), "{e}");
        assert!(e.message.contains("65536"), "the limit is named: {}", e.message);
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "stopped at the limit, not after the expansion");
        // Numbers as JSON reads them: a zero fraction is an integer, past 64 bits a double.
        let v = parse_yaml_bounded(b"a: 5.0\nb: 40548753236400965351899136\nc: -40548753236400965351899136\n", MAX_BODY_BYTES).unwrap();
        assert_eq!(v, serde_json::json!({"a": 5, "b": 4.0548753236400965e25, "c": -4.0548753236400965e25}));
        let e = parse_yaml_bounded(b"a: [unclosed", MAX_BODY_BYTES).unwrap_err();
        assert_eq!((e.kind, e.code), (Kind::Malformed, "malformed_body"));
    }
}
