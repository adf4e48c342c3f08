//! Adapter options carried in the publisher URL (`?stream=X&timeout=5s`).
//!
//! Each adapter takes the options it knows by name; whatever is left is an error, so a
//! typo (`strem=`) fails at start-up instead of silently using the default.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use super::PublisherError;

/// The options of one publisher URL, consumed by name.
#[derive(Debug)]
pub struct UrlOptions {
    url: String,
    pairs: BTreeMap<String, String>,
}

impl UrlOptions {
    /// Parses `a=1&b=2` (percent-decoded); a repeated name is an error.
    pub fn parse(url: &str, query: Option<&str>) -> Result<UrlOptions, PublisherError> {
        let mut pairs = BTreeMap::new();
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if pairs.insert(name.to_string(), value.to_string()).is_some() {
                return Err(invalid(url, format!("option {name:?} is given twice")));
            }
        }
        Ok(UrlOptions {
            url: url.into(),
            pairs,
        })
    }

    /// Parses `url` and takes its query string as the options.
    pub fn from_query(url: &str) -> Result<(url::Url, UrlOptions), PublisherError> {
        let parsed = url::Url::parse(url).map_err(|e| invalid(url, e.to_string()))?;
        let options = UrlOptions::parse(url, parsed.query())?;
        Ok((parsed, options))
    }

    /// A string option, or `default`.
    pub fn string(&mut self, name: &str, default: &str) -> String {
        self.pairs
            .remove(name)
            .unwrap_or_else(|| default.to_string())
    }

    /// A string option that must not be empty.
    pub fn non_empty(&mut self, name: &str, default: &str) -> Result<String, PublisherError> {
        let value = self.string(name, default);
        if value.is_empty() {
            return Err(invalid(&self.url, format!("option {name:?} is empty")));
        }
        Ok(value)
    }

    /// A parsed option (numbers), or `default`.
    pub fn parsed<T: FromStr>(&mut self, name: &str, default: T) -> Result<T, PublisherError>
    where
        T::Err: std::fmt::Display,
    {
        match self.pairs.remove(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|e| invalid(&self.url, format!("option {name}={v:?}: {e}"))),
        }
    }

    /// A positive duration such as `5s` or `250ms`, or `default`.
    pub fn duration(&mut self, name: &str, default: Duration) -> Result<Duration, PublisherError> {
        match self.pairs.remove(name) {
            None => Ok(default),
            Some(v) => match humantime::parse_duration(&v) {
                Ok(d) if !d.is_zero() => Ok(d),
                Ok(_) => Err(invalid(
                    &self.url,
                    format!("option {name}={v:?} must be > 0"),
                )),
                Err(e) => Err(invalid(&self.url, format!("option {name}={v:?}: {e}"))),
            },
        }
    }

    /// Fails on the first option no adapter took.
    pub fn finish(self) -> Result<(), PublisherError> {
        match self.pairs.into_keys().next() {
            None => Ok(()),
            Some(name) => Err(invalid(&self.url, format!("unknown option {name:?}"))),
        }
    }
}

/// A [`PublisherError::InvalidUrl`] for `url`.
pub fn invalid(url: &str, message: String) -> PublisherError {
    PublisherError::InvalidUrl {
        url: redact(url),
        message,
    }
}

/// The URL with its password replaced, for errors and logs.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// The URL without its query string and fragment: what the client library is given.
pub fn without_options(url: &url::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_taken_by_name_and_leftovers_are_errors() {
        let mut o = UrlOptions::parse("nats://x", Some("stream=S&timeout=250ms&strem=T")).unwrap();
        assert_eq!(o.string("stream", "D"), "S");
        assert_eq!(o.string("subject", "d.s"), "d.s");
        assert_eq!(
            o.duration("timeout", Duration::from_secs(5)).unwrap(),
            Duration::from_millis(250)
        );
        let err = o.finish().unwrap_err().to_string();
        assert!(err.contains("unknown option \"strem\""), "{err}");
    }

    #[test]
    fn bad_values_name_the_option() {
        let mut o = UrlOptions::parse("x://", Some("timeout=0s&n=abc")).unwrap();
        let e = o.duration("timeout", Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("timeout=\"0s\" must be > 0"), "{e}");
        let e = o.parsed::<u32>("n", 1).unwrap_err();
        assert!(e.to_string().contains("n=\"abc\""), "{e}");
        assert!(UrlOptions::parse("x://", Some("a=1&a=2")).is_err());
    }

    #[test]
    fn passwords_never_reach_errors() {
        assert_eq!(
            redact("amqp://guest:secret@h:5672/%2f"),
            "amqp://guest:***@h:5672/%2f"
        );
        let e = invalid("redis://:pw@h/0", "x".into()).to_string();
        assert!(!e.contains("pw@"), "{e}");
    }
}
