//! The `containerd-lease` request header: everything a request creates
//! (ingests, blobs, snapshots) is added to that lease.

use berth_core::metadata::leases::validate_id;
use tonic::{Request, Status};

/// The gRPC metadata key clients put the lease id in.
pub const LEASE_HEADER: &str = "containerd-lease";

/// The lease a request is made under, if any; a malformed id is refused.
pub fn lease<T>(request: &Request<T>) -> Result<Option<String>, Status> {
    let Some(value) = request.metadata().get(LEASE_HEADER) else {
        return Ok(None);
    };
    let id = value
        .to_str()
        .map_err(|_| Status::invalid_argument("lease header is not printable text: invalid argument"))?;
    if id.is_empty() {
        return Ok(None);
    }
    validate_id(id)?;
    Ok(Some(id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_lease_header() {
        let mut request = Request::new(());
        assert_eq!(lease(&request).unwrap(), None);
        request
            .metadata_mut()
            .insert(LEASE_HEADER, "1700000-aB_-".parse().unwrap());
        assert_eq!(lease(&request).unwrap().as_deref(), Some("1700000-aB_-"));
        let mut bad = Request::new(());
        bad.metadata_mut().insert(LEASE_HEADER, "a/b".parse().unwrap());
        assert_eq!(lease(&bad).unwrap_err().code(), tonic::Code::InvalidArgument);
    }
}
