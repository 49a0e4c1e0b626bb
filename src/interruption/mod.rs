//! Interruptions: what AWS says, through EventBridge rules into an SQS
//! queue per account and region, about instances it takes back, asks to
//! move, or that stopped or ended out of band. `message` reads what the
//! queue delivers, `queue` decides the queue and its rules, `listener`
//! acts.

pub mod listener;
pub mod message;
pub mod queue;
