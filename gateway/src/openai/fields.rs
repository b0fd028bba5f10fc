//! Typed access to the fields of a JSON request object, with errors that name the field.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// A JSON object being validated.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a>(pub &'a Map<String, Value>);

impl<'a> Fields<'a> {
    /// The request body must be a JSON object.
    pub fn of(body: &'a Value) -> Result<Self, ApiError> {
        body.as_object()
            .map(Fields)
            .ok_or_else(|| ApiError::invalid_json("the body must be a JSON object"))
    }

    /// A present, non-null field.
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    pub fn string(&self, name: &str) -> Result<Option<&'a str>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::invalid_type(name, "a string")),
        }
    }

    pub fn required_string(&self, name: &str) -> Result<&'a str, ApiError> {
        self.string(name)?.ok_or_else(|| ApiError::missing(name))
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::invalid_type(name, "a boolean")),
        }
    }

    /// A finite number within `[min, max]`.
    pub fn number(&self, name: &str, min: f64, max: f64) -> Result<Option<f32>, ApiError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        let x = v
            .as_f64()
            .ok_or_else(|| ApiError::invalid_type(name, "a number"))?;
        if !(min..=max).contains(&x) {
            return Err(ApiError::invalid_value(
                name,
                format!("{x} is not a valid value for '{name}': expected a number between {min} and {max}."),
            ));
        }
        Ok(Some(x as f32))
    }

    /// An integer within `[min, max]`.
    pub fn integer(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        let x = match v {
            Value::Number(n) => n.as_i64().or_else(|| {
                // Accept 3.0 but not 3.5; reject values beyond i64.
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| f as i64)
            }),
            _ => None,
        };
        let x = match x {
            Some(x) => x,
            None if v.is_number() => {
                return Err(ApiError::invalid_value(
                    name,
                    format!("'{name}' must be an integer between {min} and {max}."),
                ))
            }
            None => return Err(ApiError::invalid_type(name, "an integer")),
        };
        if !(min..=max).contains(&x) {
            return Err(ApiError::invalid_value(
                name,
                format!("{x} is not a valid value for '{name}': expected an integer between {min} and {max}."),
            ));
        }
        Ok(Some(x))
    }

    /// A nested object.
    pub fn object(&self, name: &str) -> Result<Option<Fields<'a>>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(Fields(m))),
            Some(_) => Err(ApiError::invalid_type(name, "an object")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typed_access_names_the_field() {
        let v = json!({"t": 0.5, "n": 3, "s": "x", "b": true, "bad": "1", "big": 1e300, "frac": 2.5, "null": null});
        let f = Fields::of(&v).expect("object");
        assert_eq!(f.number("t", 0.0, 2.0).expect("ok"), Some(0.5));
        assert_eq!(f.integer("n", 1, 10).expect("ok"), Some(3));
        assert_eq!(f.string("s").expect("ok"), Some("x"));
        assert_eq!(f.bool("b").expect("ok"), Some(true));
        assert_eq!(f.number("null", 0.0, 1.0).expect("null is absent"), None);
        assert_eq!(
            f.number("bad", 0.0, 1.0)
                .expect_err("type")
                .param
                .as_deref(),
            Some("bad")
        );
        assert_eq!(
            f.integer("big", 0, 10).expect_err("range").code,
            "invalid_value"
        );
        assert_eq!(
            f.integer("frac", 0, 10).expect_err("fraction").code,
            "invalid_value"
        );
        assert_eq!(
            f.number("t", 1.0, 2.0).expect_err("range").code,
            "invalid_value"
        );
        assert_eq!(
            f.required_string("missing").expect_err("missing").code,
            "missing_required_parameter"
        );
        assert!(Fields::of(&json!([1])).is_err());
    }
}
