//! Calls that name what was made moments ago, retried inside the SDK while
//! AWS catches up. EC2 is eventually consistent: for a second or two after
//! a create, a call naming the new resource (a subnet in a new VPC, a route
//! through a new NAT gateway) may be answered `Invalid<Kind>ID.NotFound`
//! ("Eventual consistency in the Amazon EC2 API", EC2 API Reference: retry
//! with exponential backoff). Retried here, the SDK's backoff waits about
//! that long and the pass goes on, instead of the call failing its step and
//! every step after it until the next pass.
//!
//! Only for calls that create or change something naming another resource:
//! for a deletion, not found means done, at once.

use std::error::Error as StdError;
use std::marker::PhantomData;

use aws_sdk_ec2::client::customize::CustomizableOperation;
use aws_smithy_runtime_api::client::interceptors::context::InterceptorContext;
use aws_smithy_runtime_api::client::orchestrator::OrchestratorError;
use aws_smithy_runtime_api::client::retries::classifiers::{
    ClassifyRetry, RetryAction, RetryClassifierPriority,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::retry::{ErrorKind, RetryConfig};

use super::error::names_unknown_id;

/// Attempts of a call that names new resources: the SDK's standard backoff
/// (up to 1, 2, 4 and 8 s between them, jittered) outlasts AWS's window of
/// a second or two; the SDK's default of 3 may not.
pub const ATTEMPTS: u32 = 5;

/// Classifies an operation's error naming an unknown ID as retryable.
pub struct UnknownNewId<E>(PhantomData<fn() -> E>);

impl<E> Default for UnknownNewId<E> {
    fn default() -> Self {
        UnknownNewId(PhantomData)
    }
}

impl<E> std::fmt::Debug for UnknownNewId<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnknownNewId")
    }
}

impl<E> ClassifyRetry for UnknownNewId<E>
where
    E: StdError + ProvideErrorMetadata + Send + Sync + 'static,
{
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let code = match ctx.output_or_error() {
            Some(Err(e)) => OrchestratorError::as_operation_error(e)
                .and_then(|e| e.downcast_ref::<E>())
                .and_then(ProvideErrorMetadata::code),
            _ => None,
        };
        match code {
            Some(code) if names_unknown_id(code) => {
                RetryAction::retryable_error(ErrorKind::TransientError)
            }
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "unknown new ID"
    }

    fn priority(&self) -> RetryClassifierPriority {
        RetryClassifierPriority::run_after(RetryClassifierPriority::transient_error_classifier())
    }
}

/// `c.ec2.create_subnet()…customize().retrying_new_ids().send()`.
pub trait RetryNewIds {
    fn retrying_new_ids(self) -> Self;
}

impl<T, E, B> RetryNewIds for CustomizableOperation<T, E, B>
where
    E: StdError + ProvideErrorMetadata + Send + Sync + 'static,
{
    fn retrying_new_ids(self) -> Self {
        self.config_override(new_ids_retried::<E>())
    }
}

/// The override that retries operation error `E` naming an unknown ID (to
/// add other classifiers to).
pub fn new_ids_retried<E>() -> aws_sdk_ec2::config::Builder
where
    E: StdError + ProvideErrorMetadata + Send + Sync + 'static,
{
    aws_sdk_ec2::config::Builder::default()
        .retry_classifier(UnknownNewId::<E>::default())
        .retry_config(RetryConfig::standard().with_max_attempts(ATTEMPTS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::operation::create_subnet::CreateSubnetError;
    use aws_smithy_runtime_api::client::interceptors::context::{Error, Input, Output};
    use aws_smithy_types::error::ErrorMetadata;

    fn classified(outcome: Option<Result<(), &str>>) -> RetryAction {
        let mut ctx = InterceptorContext::new(Input::doesnt_matter());
        if let Some(outcome) = outcome {
            ctx.set_output_or_error(match outcome {
                Ok(()) => Ok(Output::doesnt_matter()),
                Err(code) => Err(OrchestratorError::operation(Error::erase(
                    CreateSubnetError::generic(ErrorMetadata::builder().code(code).build()),
                ))),
            });
        }
        UnknownNewId::<CreateSubnetError>::default().classify_retry(&ctx)
    }

    #[test]
    fn an_unknown_id_is_retried_and_nothing_else() {
        let retried = RetryAction::retryable_error(ErrorKind::TransientError);
        for code in [
            "InvalidVpcID.NotFound",
            "InvalidSubnetID.NotFound",
            "InvalidGroup.NotFound",
            "InvalidRouteTableID.NotFound",
            "InvalidInternetGatewayID.NotFound",
            "InvalidAllocationID.NotFound",
            "NatGatewayNotFound",
            "InvalidVpcEndpointId.NotFound",
            "InvalidVpcPeeringConnectionID.NotFound",
        ] {
            assert_eq!(classified(Some(Err(code))), retried, "{code}");
        }
        // The user's to fix, or not about a new resource: left to the
        // SDK's own classifiers and the pass.
        for code in [
            "InvalidAMIID.NotFound",
            "InvalidKeyPair.NotFound",
            "InvalidParameterValue",
            "InvalidSubnet.Conflict",
            "DependencyViolation",
        ] {
            assert_eq!(
                classified(Some(Err(code))),
                RetryAction::NoActionIndicated,
                "{code}"
            );
        }
        assert_eq!(classified(Some(Ok(()))), RetryAction::NoActionIndicated);
        assert_eq!(classified(None), RetryAction::NoActionIndicated);
    }
}
