//! How much one request may carry: bytes of body and operations in a batch. A
//! tenant sets them in `[tenant.limits]` and a credential in its `[[credential]]`;
//! a request gets the tighter of its tenant's and its credential's. The body is
//! read only up to the limit, so an oversized request costs the host no more than
//! the limit's worth of reading.

/// The body limit when none is configured (a few thousand operations).
pub const DEFAULT_REQUEST_BYTES: usize = 4 << 20;
/// The batch limit when none is configured.
pub const DEFAULT_REQUEST_OPERATIONS: usize = 10_000;
/// The smallest body limit accepted: one operation at its limits fits.
pub const MIN_REQUEST_BYTES: usize = 4 << 10;
/// The largest body limit accepted.
pub const MAX_REQUEST_BYTES: usize = 1 << 30;

/// What one request may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Bytes of request body.
    pub body_bytes: usize,
    /// Operations in one `POST …/operations`.
    pub operations: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            body_bytes: DEFAULT_REQUEST_BYTES,
            operations: DEFAULT_REQUEST_OPERATIONS,
        }
    }
}

impl RequestLimits {
    /// Each limit at the smaller of the two.
    pub fn tighter(self, other: RequestLimits) -> RequestLimits {
        RequestLimits {
            body_bytes: self.body_bytes.min(other.body_bytes),
            operations: self.operations.min(other.operations),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tighter_of_two_takes_each_limit_from_whichever_is_smaller() {
        let tenant = RequestLimits {
            body_bytes: 1 << 20,
            operations: 50_000,
        };
        let credential = RequestLimits {
            body_bytes: 8 << 20,
            operations: 100,
        };
        let both = RequestLimits {
            body_bytes: 1 << 20,
            operations: 100,
        };
        assert_eq!(tenant.tighter(credential), both);
        assert_eq!(credential.tighter(tenant), both);
        assert_eq!(
            RequestLimits::default().tighter(RequestLimits::default()),
            RequestLimits::default()
        );
    }
}
