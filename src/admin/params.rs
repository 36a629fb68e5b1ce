//! Query and path parameters of the admin API, parsed strictly: a value that
//! does not parse, a repeated or an unknown parameter is a 400 naming it.

use std::time::{Duration, SystemTime};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::error::ApiError;
use crate::audit::format_time;

/// Largest page any listing returns.
pub const MAX_LIMIT: u32 = 1000;
/// Page size when `limit` is absent.
pub const DEFAULT_LIMIT: u32 = 100;

/// A query string's pairs, taken one known name at a time.
pub struct Params {
    pairs: Vec<(String, String)>,
    known: &'static [&'static str],
}

impl Params {
    /// Refuses names outside `known` and names given twice.
    pub fn new(
        pairs: Vec<(String, String)>,
        known: &'static [&'static str],
    ) -> Result<Params, ApiError> {
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !known.contains(&name.as_str()) {
                return Err(ApiError::UnknownParameter {
                    name: name.clone(),
                    known: known.join(", "),
                });
            }
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(ApiError::RepeatedParameter { name: name.clone() });
            }
        }
        Ok(Params { pairs, known })
    }

    /// The value of `name`, if given (an empty value counts as absent).
    pub fn get(&self, name: &str) -> Option<&str> {
        debug_assert!(
            self.known.contains(&name),
            "{name} is not a declared parameter"
        );
        self.pairs
            .iter()
            .find(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// A campaign, snapshot or record id: a positive integer.
    pub fn id(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name).map(|v| parse_id(name, v)).transpose()
    }

    /// `limit`: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
    pub fn limit(&self) -> Result<u32, ApiError> {
        match self.get("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| ApiError::bad("limit", "an integer from 1 to 1000")),
        }
    }

    /// A time bound as stored in the trail, from RFC 3339 or a duration ago.
    pub fn time(&self, name: &str, now: SystemTime) -> Result<Option<String>, ApiError> {
        self.get(name)
            .map(|v| {
                parse_time(v, now).ok_or_else(|| {
                    ApiError::bad(
                        name,
                        "an RFC 3339 time (2024-05-01T12:00:00Z) or a duration ago (30m, 24h, 7d)",
                    )
                })
            })
            .transpose()
    }
}

/// A positive integer id, from a path segment or a query value.
pub fn parse_id(name: &str, value: &str) -> Result<i64, ApiError> {
    value
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::bad(name, "a positive integer id"))
}

/// RFC 3339 (any offset) or a duration before `now` (`30m`, `24h`, `7d`,
/// `1h30m`), as the trail's `YYYY-MM-DDTHH:MM:SS.mmmZ` in UTC. Both shapes
/// compare correctly as strings against stored times.
pub fn parse_time(value: &str, now: SystemTime) -> Option<String> {
    let at = match OffsetDateTime::parse(value, &Rfc3339) {
        Ok(t) => SystemTime::from(t),
        Err(_) => {
            let ago: Duration = humantime::parse_duration(value).ok()?;
            now.checked_sub(ago)?
        }
    };
    // Four-digit years only: anything else would not compare as a string.
    let year = OffsetDateTime::from(at).year();
    (0..=9999).contains(&year).then(|| format_time(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SystemTime {
        OffsetDateTime::parse(s, &Rfc3339).unwrap().into()
    }

    #[test]
    fn rfc3339_times_in_any_offset_become_the_stored_utc_form() {
        let now = SystemTime::now();
        assert_eq!(
            parse_time("2024-05-01T12:00:00+02:00", now).as_deref(),
            Some("2024-05-01T10:00:00.000Z")
        );
        assert_eq!(
            parse_time("2024-05-01T10:00:00.123456Z", now).as_deref(),
            Some("2024-05-01T10:00:00.123Z")
        );
    }

    #[test]
    fn durations_count_back_from_now() {
        let now = at("2024-05-08T00:00:00Z");
        assert_eq!(
            parse_time("24h", now).as_deref(),
            Some("2024-05-07T00:00:00.000Z")
        );
        assert_eq!(
            parse_time("30m", now).as_deref(),
            Some("2024-05-07T23:30:00.000Z")
        );
        assert_eq!(
            parse_time("7d", now).as_deref(),
            Some("2024-05-01T00:00:00.000Z")
        );
        assert_eq!(
            parse_time("1h30m", now).as_deref(),
            Some("2024-05-07T22:30:00.000Z")
        );
    }

    #[test]
    fn anything_else_is_not_a_time() {
        let now = SystemTime::now();
        for bad in [
            "yesterday",
            "24",
            "2024-05-01",
            "2024-05-01 10:00:00",
            "-1h",
            "",
        ] {
            assert_eq!(parse_time(bad, now), None, "{bad}");
        }
    }

    #[test]
    fn ids_are_positive_integers() {
        assert_eq!(parse_id("id", "101").unwrap(), 101);
        for bad in ["0", "-3", "abc", "1.5", "99999999999999999999"] {
            assert!(parse_id("id", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_and_repeated_parameters_are_refused() {
        let pair = |n: &str, v: &str| (n.to_string(), v.to_string());
        let known: &[&str] = &["campaign", "limit"];
        assert!(matches!(
            Params::new(vec![pair("campaing", "1")], known),
            Err(ApiError::UnknownParameter { name, .. }) if name == "campaing"
        ));
        assert!(matches!(
            Params::new(vec![pair("limit", "1"), pair("limit", "2")], known),
            Err(ApiError::RepeatedParameter { name }) if name == "limit"
        ));
        let p = Params::new(vec![pair("limit", "1001")], known).unwrap();
        assert!(p.limit().is_err());
        let p = Params::new(vec![pair("limit", "")], known).unwrap();
        assert_eq!(p.limit().unwrap(), DEFAULT_LIMIT);
    }
}
