//! CloudEvents identity: which event a delivery carries, in binary mode
//! (`ce-id` + `ce-source` headers) or structured mode (an
//! `application/cloudevents+json` body, read up to the guard's body limit).
//! Pure: no I/O. An event is unique by source and id (CloudEvents 1.0);
//! one already processed is acknowledged without reaching the app again.
//! Batches (`application/cloudevents-batch+json`) are not deduplicated.

use http::header::CONTENT_TYPE;
use http::HeaderMap;
use serde_json::{Map, Value};

/// One delivery's event attributes.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// Binary mode: the attributes are `ce-*` headers.
    Binary {
        /// `ce-source`
        source: String,
        /// `ce-id`
        id: String,
    },
    /// Structured mode: the attributes are members of the JSON body.
    Structured(Map<String, Value>),
}

/// Whether the body must be read to know the event (structured mode).
pub fn is_structured(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let media = ct.split(';').next().unwrap_or("").trim();
            media.eq_ignore_ascii_case("application/cloudevents+json")
        })
}

/// The delivery's event, if it is one; an error (400) for a broken one.
pub fn event(headers: &HeaderMap, body: &[u8]) -> Result<Option<Event>, String> {
    if is_structured(headers) {
        let attrs: Map<String, Value> = serde_json::from_slice(body)
            .map_err(|e| format!("structured CloudEvent is not a JSON object: {e}"))?;
        for name in ["id", "source"] {
            if attrs.get(name).and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(format!("structured CloudEvent has no {name}"));
            }
        }
        return Ok(Some(Event::Structured(attrs)));
    }
    let get = |name: &str| headers.get(name).map(|v| v.to_str().map(str::to_owned));
    match (get("ce-source"), get("ce-id")) {
        (None, None) => Ok(None),
        (Some(Ok(source)), Some(Ok(id))) if !source.is_empty() && !id.is_empty() => {
            Ok(Some(Event::Binary { source, id }))
        }
        _ => Err("a CloudEvent needs both ce-source and ce-id, non-empty visible ASCII".into()),
    }
}

impl Event {
    /// The store key: source and id, unambiguously joined.
    pub fn key(&self) -> String {
        let (source, id) = match self {
            Event::Binary { source, id } => (source.as_str(), id.as_str()),
            Event::Structured(a) => (
                a.get("source").and_then(Value::as_str).unwrap_or(""),
                a.get("id").and_then(Value::as_str).unwrap_or(""),
            ),
        };
        format!("ce:{}:{source}{id}", source.len())
    }

    /// A structured event's attribute named as its binary-mode header
    /// (`ce-partitionkey` → `partitionkey`); numbers as their decimal text.
    pub fn attribute(&self, header: &str) -> Option<String> {
        let Event::Structured(a) = self else { return None };
        let name = header.strip_prefix("ce-")?;
        match a.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn finds_the_event_in_either_mode() {
        const STRUCTURED: &str = "application/cloudevents+json; charset=utf-8";
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, Result<Option<&'a str>, ()>);
        let table: &[Case<'static>] = &[
            (&[], "", Ok(None)),
            (&[("ce-id", "1"), ("ce-source", "/s")], "", Ok(Some("ce:2:/s1"))),
            (&[("ce-id", "1")], "", Err(())),
            (&[("ce-id", ""), ("ce-source", "/s")], "", Err(())),
            (
                &[("content-type", STRUCTURED)],
                r#"{"id":"7","source":"/src"}"#,
                Ok(Some("ce:4:/src7")),
            ),
            (&[("content-type", STRUCTURED)], r#"{"id":"7"}"#, Err(())),
            (&[("content-type", STRUCTURED)], "not json", Err(())),
            (
                &[("content-type", "application/json")],
                r#"{"id":"7","source":"/s"}"#,
                Ok(None),
            ),
        ];
        for (h, body, want) in table {
            let got = event(&headers(h), body.as_bytes())
                .map(|e| e.map(|e| e.key()))
                .map_err(|_| ());
            assert_eq!(got, want.map(|k| k.map(str::to_owned)), "{h:?} {body}");
        }
    }

    #[test]
    fn source_and_id_cannot_run_into_each_other() {
        let a = Event::Binary {
            source: "/a".into(),
            id: "b1".into(),
        };
        let b = Event::Binary {
            source: "/ab".into(),
            id: "1".into(),
        };
        assert_ne!(a.key(), b.key());
    }

    #[test]
    fn structured_attributes_stand_for_their_headers() {
        let body = r#"{"id":"1","source":"/s","partitionkey":"p7","sequence":42}"#;
        let h = headers(&[("content-type", "application/cloudevents+json")]);
        let e = event(&h, body.as_bytes()).unwrap().unwrap();
        assert_eq!(e.attribute("ce-partitionkey").as_deref(), Some("p7"));
        assert_eq!(e.attribute("ce-sequence").as_deref(), Some("42"));
        assert_eq!(e.attribute("x-other"), None);
    }
}
