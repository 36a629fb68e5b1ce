//! Times on the command line (`--since`, `--until`, `--older-than`): an RFC
//! 3339 time or an age such as `24h`, `30m`, `7d` (meaning now minus that),
//! turned into the form the database stores so SQL can compare the text.

use std::time::{Duration, SystemTime};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::audit::format_time;

/// A time argument that is neither an RFC 3339 time nor an age.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{input}` is neither an RFC 3339 time (2024-05-01T12:00:00Z) \
     nor an age such as 30m, 24h or 7d"
)]
pub struct BadTime {
    input: String,
}

/// An age that is not a duration.
#[derive(Debug, thiserror::Error)]
#[error("`{input}` is not an age such as 30m, 24h or 90d")]
pub struct BadAge {
    input: String,
}

/// clap parser for `--since` / `--until`: the stored form
/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn parse_time(input: &str) -> Result<String, BadTime> {
    if let Ok(t) = OffsetDateTime::parse(input, &Rfc3339) {
        return Ok(format_time(SystemTime::from(t)));
    }
    parse_age(input).map(|age| ago(age.0)).map_err(|_| BadTime {
        input: input.to_string(),
    })
}

/// An age given on the command line, e.g. `90d`.
#[derive(Debug, Clone, Copy)]
pub struct Age(pub Duration);

/// clap parser for `--older-than`.
pub fn parse_age(input: &str) -> Result<Age, BadAge> {
    humantime::parse_duration(input.trim())
        .map(Age)
        .map_err(|_| BadAge {
            input: input.to_string(),
        })
}

/// Now minus `age`, in the stored form (clamped at the epoch).
pub fn ago(age: Duration) -> String {
    let now = SystemTime::now();
    format_time(now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_are_converted_to_utc_milliseconds() {
        assert_eq!(
            parse_time("2024-05-01T14:30:00+02:00").unwrap(),
            "2024-05-01T12:30:00.000Z"
        );
        assert_eq!(
            parse_time("2024-05-01T12:30:00.123456Z").unwrap(),
            "2024-05-01T12:30:00.123Z"
        );
    }

    #[test]
    fn ages_count_back_from_now() {
        let day_ago = parse_time("24h").unwrap();
        let week_ago = parse_time("7d").unwrap();
        let now = format_time(SystemTime::now());
        assert!(
            week_ago < day_ago && day_ago < now,
            "{week_ago} {day_ago} {now}"
        );
        assert_eq!(day_ago.len(), now.len());
    }

    #[test]
    fn nonsense_is_refused_naming_both_forms() {
        let err = parse_time("yesterday").unwrap_err().to_string();
        assert!(err.contains("RFC 3339") && err.contains("24h"), "{err}");
        assert!(parse_age("soon").is_err());
    }
}
