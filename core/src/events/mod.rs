//! Events: the exchange, topic rules and what filters see of an envelope.

mod envelope_fields;
mod exchange;
pub mod topic;

pub use exchange::{Exchange, SUBSCRIBER_QUEUE, Subscription};
