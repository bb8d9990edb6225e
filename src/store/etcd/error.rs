//! etcd's failures, classified by what they mean for a request: refused
//! before anything was written, possibly applied, a limit, a compacted or
//! future revision.

use crate::store::error::{EngineError, StoreError};
use crate::store::options::EtcdOptions;

/// An error of the etcd client, classified by what it means for a
/// request.
#[derive(Debug)]
pub(super) struct EtcdError(pub(super) etcd_client::Error);

impl EtcdError {
    pub(super) fn message(&self) -> String {
        match &self.0 {
            etcd_client::Error::GRpcStatus(s) => s.message().to_string(),
            e => e.to_string(),
        }
    }

    pub(super) fn code(&self) -> Option<tonic::Code> {
        match &self.0 {
            etcd_client::Error::GRpcStatus(s) => Some(s.code()),
            _ => None,
        }
    }

    pub(super) fn engine(&self) -> EngineError {
        EngineError::new("etcd request failed", std::io::Error::other(self.message()))
    }

    /// etcd's NOSPACE alarm is raised.
    pub(super) fn is_no_space(&self) -> bool {
        self.message().contains("database space exceeded")
    }

    /// A refusal by one of etcd's request limits (nothing was written).
    pub(super) fn too_large(&self) -> Option<String> {
        let m = self.message();
        if m.contains("too many operations in txn request") {
            Some(format!(
                "the request needs more operations in its one etcd transaction than the cluster \
                 allows (etcd --max-txn-ops): {m}"
            ))
        } else if m.contains("request is too large") || m.contains("message length too large") {
            Some(format!(
                "the request is larger than the cluster accepts in one transaction (etcd \
                 --max-request-bytes): {m}"
            ))
        } else {
            None
        }
    }

    /// The request was refused before etcd could apply it: no leader, no
    /// connection.
    pub(super) fn never_sent(&self) -> bool {
        let m = self.message();
        if m.contains("no leader") || m.contains("not capable") {
            return true;
        }
        match &self.0 {
            etcd_client::Error::TransportError(_) | etcd_client::Error::InvalidUri(_) => true,
            etcd_client::Error::GRpcStatus(s) => {
                s.code() == tonic::Code::Unavailable
                    && (m.contains("connect") || m.contains("Connection refused"))
            }
            _ => false,
        }
    }

    /// A compacted revision was asked for.
    pub(super) fn is_compacted(&self) -> bool {
        self.message()
            .contains("required revision has been compacted")
    }

    /// A revision etcd has not reached was asked for.
    pub(super) fn is_future(&self) -> bool {
        self.message()
            .contains("required revision is a future revision")
    }

    /// A failure that asking again may not meet (for a read: anything but
    /// a compacted or future revision, a limit, or a refused argument or
    /// credential).
    pub(super) fn passing(&self) -> bool {
        let refused = matches!(
            self.code(),
            Some(
                tonic::Code::InvalidArgument
                    | tonic::Code::PermissionDenied
                    | tonic::Code::Unauthenticated
            )
        );
        !(refused || self.is_compacted() || self.is_future() || self.too_large().is_some())
    }

    /// For a read: nothing was written, so anything but a compaction or a
    /// limit is `Unavailable`.
    pub(super) fn read(self) -> StoreError {
        if self.is_compacted() {
            return StoreError::Gone(
                "etcd compacted the revision this read needs: list again from the start".into(),
            );
        }
        if self.is_future() {
            return StoreError::Gone(
                "the revision this read names is newer than etcd's: it belongs to another \
                 history; list again from the start"
                    .into(),
            );
        }
        if let Some(m) = self.too_large() {
            return StoreError::TooLarge(m);
        }
        if self.code() == Some(tonic::Code::Internal) {
            return StoreError::Engine(self.engine());
        }
        StoreError::Unavailable(format!("etcd did not answer: {}", self.message()))
    }

    /// For a write whose outcome cannot be read back: a refusal when
    /// nothing can have been written, else `OutcomeUnknown`.
    pub(super) fn refusal_or_unknown(self) -> StoreError {
        if let Some(m) = self.too_large() {
            return StoreError::TooLarge(m);
        }
        if self.is_no_space() {
            return StoreError::NoSpace(no_space_message());
        }
        if self.never_sent() {
            return StoreError::Unavailable(format!(
                "etcd has no quorum or cannot be reached; nothing was written: {}",
                self.message()
            ));
        }
        StoreError::OutcomeUnknown(format!(
            "etcd did not confirm the write ({}): it may or may not have been applied; read the \
             object back before retrying",
            self.message()
        ))
    }
}

pub(super) fn no_space_message() -> String {
    "etcd's storage quota is reached (NOSPACE alarm, --quota-backend-bytes): writes are refused \
     until an operator compacts, defragments and disarms the alarm; reads and deletes still work"
        .into()
}

/// The refusal of a start (or a restore) that cannot reach a quorum.
pub(super) fn no_quorum(options: &EtcdOptions, why: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "etcd at {} has no quorum or cannot be reached within {:?} ({why}): start the cluster's \
         members, or check --etcd-endpoints",
        options.endpoints.join(","),
        options.timeout
    ))
}

/// The answer when conflicting writes kept overtaking a request.
pub(super) fn contention() -> StoreError {
    StoreError::Unavailable(
        "the object kept changing under this write (every attempt until the deadline was \
         overtaken by another write): nothing was written; retry"
            .into(),
    )
}
