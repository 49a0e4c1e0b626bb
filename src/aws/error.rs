//! AWS errors, classified by what should happen next.

use std::error::Error as StdError;

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;

/// What an AWS error means for the reconciler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Throttling, 5xx, timeouts, eventual consistency: retry with backoff.
    Transient,
    /// The thing is gone (deleting it is done).
    NotFound,
    /// The user must act: access denied, quota, invalid AMI, bad parameter.
    NeedsUser,
}

/// An AWS call that failed.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// AWS answered with an error code.
    #[error("{operation}: {code}: {message}")]
    Service {
        operation: &'static str,
        code: String,
        message: String,
        class: ErrorClass,
    },
    /// No usable answer: connection, timeout, unparseable response.
    #[error("{operation}: {source}")]
    Transport {
        operation: &'static str,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// AWS answered, but without something it always returns (an ID).
    #[error("{operation}: the response has no {missing}")]
    Incomplete {
        operation: &'static str,
        missing: &'static str,
    },
}

pub type AwsResult<T> = Result<T, AwsError>;

impl AwsError {
    /// Wraps an SDK error of `operation`.
    pub fn from_sdk<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        match err {
            SdkError::ServiceError(service) => {
                let e = service.err();
                let code = e.code().unwrap_or("Unknown").to_string();
                let message = e.message().unwrap_or_default().to_string();
                let class = classify(&code, &message, status);
                AwsError::Service {
                    operation,
                    code,
                    message,
                    class,
                }
            }
            other => AwsError::Transport {
                operation,
                source: Box::new(other),
            },
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            AwsError::Service { class, .. } => *class,
            AwsError::Transport { .. } | AwsError::Incomplete { .. } => ErrorClass::Transient,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.class() == ErrorClass::NotFound
    }

    /// AWS has not caught up with what was just made (eventual
    /// consistency): a new resource unknown to a call that names it, or a
    /// new instance profile not yet usable by EC2. Worth looking again
    /// soon, not after a growing backoff.
    pub fn is_settling(&self) -> bool {
        self.is_unknown_id()
            || matches!(self, AwsError::Service { code, message, .. } if young_instance_profile(code, message))
    }

    /// A call naming a resource AWS does not know yet (or no longer): the
    /// part of [`Self::is_settling`] that passes within seconds.
    pub fn is_unknown_id(&self) -> bool {
        matches!(self, AwsError::Service { code, class: ErrorClass::NotFound, .. } if names_unknown_id(code))
    }

    /// For a call that creates something: what it refers to does not exist
    /// (a key pair, a security group, an image), which the user must fix;
    /// not "done", as not-found means for a deletion.
    pub fn missing_reference(self) -> Self {
        match self {
            AwsError::Service {
                operation,
                code,
                message,
                class: ErrorClass::NotFound,
            } => AwsError::Service {
                operation,
                code,
                message,
                class: ErrorClass::NeedsUser,
            },
            other => other,
        }
    }

    /// AWS throttled the caller.
    pub fn is_throttling(&self) -> bool {
        self.code().is_some_and(|c| THROTTLING.contains(&c))
    }

    /// AWS refused the caller's permissions (as opposed to the request).
    pub fn is_access_denied(&self) -> bool {
        const DENIED: &[&str] = &[
            "AccessDenied",
            "AccessDeniedException",
            "UnauthorizedOperation",
            "AuthFailure",
        ];
        self.code().is_some_and(|c| DENIED.contains(&c))
    }

    /// The AWS error code, when AWS gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Service { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A field AWS always returns (an ID): its absence is an error, never `""`.
pub fn required<T: ToString + ?Sized>(
    value: Option<&T>,
    operation: &'static str,
    missing: &'static str,
) -> AwsResult<String> {
    value
        .map(ToString::to_string)
        .ok_or(AwsError::Incomplete { operation, missing })
}

/// `result.op("ec2:CreateVpc")?`: classifies an SDK error as it leaves the SDK.
pub trait SdkResultExt<T> {
    fn op(self, operation: &'static str) -> AwsResult<T>;
}

impl<T, E> SdkResultExt<T> for Result<T, SdkError<E, HttpResponse>>
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    fn op(self, operation: &'static str) -> AwsResult<T> {
        self.map_err(|e| AwsError::from_sdk(operation, e))
    }
}

/// What "not found" means: for a deletion, done; for a lookup, absent.
pub trait NotFoundExt<T> {
    /// A deletion whose target is already gone succeeded.
    fn or_gone(self) -> AwsResult<()>;
    /// A lookup of something that does not exist found nothing.
    fn found(self) -> AwsResult<Option<T>>;
}

impl<T> NotFoundExt<T> for AwsResult<T> {
    fn or_gone(self) -> AwsResult<()> {
        self.found().map(|_| ())
    }

    fn found(self) -> AwsResult<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Codes by which AWS throttles a caller (they pass by themselves).
pub const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
];
/// Other codes that pass by themselves.
const TRANSIENT: &[&str] = &[
    "ServiceUnavailable",
    "Unavailable",
    "InternalError",
    "InternalFailure",
    "ServerInternal",
    "InsufficientInstanceCapacity",
    "DependencyViolation",
    "IncorrectState",
    "IncorrectInstanceState",
    "InvalidState",
    "ConcurrentModification",
    "ConcurrentModificationException",
    "IdempotentParameterMismatch",
    "Gateway.NotAttached",
    "RequestExpired",
    "PriorRequestNotComplete",
];
/// Codes the user must act on.
const NEEDS_USER: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "AuthFailure",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "OptInRequired",
    "Blocked",
    "InstanceLimitExceeded",
    "VpcLimitExceeded",
    "AddressLimitExceeded",
    "NatGatewayLimitExceeded",
    "InternetGatewayLimitExceeded",
    "RouteTableLimitExceeded",
    "SecurityGroupLimitExceeded",
    "RulesPerSecurityGroupLimitExceeded",
    "SubnetLimitExceeded",
    "VcpuLimitExceeded",
    "MaxSpotInstanceCountExceeded",
    "LimitExceeded",
    "EntityAlreadyExists",
    "MalformedPolicyDocument",
    "Unsupported",
    "UnsupportedOperation",
    "InvalidAMIID.Malformed",
    "InvalidAMIID.NotFound",
    "InvalidAMIID.Unavailable",
    "InvalidInstanceType",
    "InvalidSubnet.Conflict",
    "InvalidVpc.Range",
    "InvalidParameterCombination",
    "InvalidAvailabilityZone",
    "InvalidKeyPair.Format",
    "MissingParameter",
];

/// Codes by which EC2 refuses an offering (an instance type in a zone, on
/// demand or spot): AWS's state, not the user's doing, and another offering
/// may be accepted. Some come with status 500: they are answers, not
/// failures to retry.
pub const REFUSALS: &[&str] = &[
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "InsufficientHostCapacity",
    "InsufficientReservedInstanceCapacity",
    "Unsupported",
    "MaxSpotInstanceCountExceeded",
    "SpotMaxPriceTooLow",
];

/// Whether AWS's `code` refuses an offering (rather than the request).
pub fn is_refusal(code: Option<&str>) -> bool {
    code.is_some_and(|c| REFUSALS.contains(&c))
}

/// Whether `code` says an AWS quota or limit is reached (the user must
/// raise it or use less); throttling is not one.
pub fn is_quota(code: Option<&str>) -> bool {
    code.is_some_and(|c| c.ends_with("LimitExceeded") && c != "RequestLimitExceeded")
}

/// IAM is eventually consistent: EC2 refuses a new instance profile for a
/// few seconds ("Invalid IAM Instance Profile").
fn young_instance_profile(code: &str, message: &str) -> bool {
    code == "InvalidParameterValue" && message.to_ascii_lowercase().contains("instance profile")
}

/// An EC2 code saying a resource named by ID is unknown (an image is the
/// user's to name, not one the operator makes).
pub fn names_unknown_id(code: &str) -> bool {
    (code.ends_with("ID.NotFound") && !code.starts_with("InvalidAMIID"))
        || code == "InvalidGroup.NotFound"
        || code == "NatGatewayNotFound"
        || code == "InvalidVpcEndpointId.NotFound"
}

/// Classifies an AWS error code.
pub fn classify(code: &str, message: &str, status: Option<u16>) -> ErrorClass {
    if young_instance_profile(code, message) {
        return ErrorClass::Transient;
    }
    if THROTTLING.contains(&code) || TRANSIENT.contains(&code) {
        return ErrorClass::Transient;
    }
    if NEEDS_USER.contains(&code) || code.starts_with("InvalidAMIID") {
        return ErrorClass::NeedsUser;
    }
    if code == "NoSuchEntity"
        || code == "QueueDoesNotExist"
        || code == "AWS.SimpleQueueService.NonExistentQueue"
        || code.ends_with(".NotFound")
        || code.ends_with("NotFound")
        || code.ends_with("NotFoundException")
    {
        return ErrorClass::NotFound;
    }
    if code.starts_with("InvalidParameter") {
        return ErrorClass::NeedsUser;
    }
    match status {
        Some(s) if s >= 500 || s == 429 => ErrorClass::Transient,
        Some(403) => ErrorClass::NeedsUser,
        // Unknown codes are retried with backoff: a blip must not stall a cluster.
        _ => ErrorClass::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settling_is_a_new_id_unknown_or_a_young_profile() {
        let e = |code: &str, message: &str| AwsError::Service {
            operation: "x",
            code: code.into(),
            message: message.into(),
            class: classify(code, message, Some(400)),
        };
        assert!(e("InvalidVpcID.NotFound", "").is_settling());
        assert!(e("InvalidGroup.NotFound", "").is_settling());
        assert!(e("NatGatewayNotFound", "").is_settling());
        assert!(e(
            "InvalidParameterValue",
            "Value (p) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name"
        )
        .is_settling());
        // What the user named and does not exist is theirs to fix.
        assert!(!e("InvalidAMIID.NotFound", "").is_settling());
        assert!(!e("InvalidKeyPair.NotFound", "").is_settling());
        assert!(!e("InvalidParameterValue", "bad CIDR").is_settling());
        assert!(!e("RequestLimitExceeded", "").is_settling());
    }

    #[test]
    fn classes() {
        assert_eq!(
            classify("RequestLimitExceeded", "", Some(503)),
            ErrorClass::Transient
        );
        assert_eq!(classify("Throttling", "", Some(400)), ErrorClass::Transient);
        assert_eq!(
            classify("UnauthorizedOperation", "", Some(403)),
            ErrorClass::NeedsUser
        );
        assert_eq!(
            classify("InvalidAMIID.NotFound", "", Some(400)),
            ErrorClass::NeedsUser
        );
        assert_eq!(
            classify("InvalidKeyPair.Format", "", Some(400)),
            ErrorClass::NeedsUser
        );
        assert_eq!(
            classify("InvalidVpcID.NotFound", "", Some(400)),
            ErrorClass::NotFound
        );
        assert_eq!(
            classify("NoSuchEntity", "", Some(404)),
            ErrorClass::NotFound
        );
        assert_eq!(
            classify("DependencyViolation", "", Some(400)),
            ErrorClass::Transient
        );
        assert_eq!(
            classify("InvalidParameterValue", "Value (x) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name", Some(400)),
            ErrorClass::Transient
        );
        assert_eq!(classify("Whatever", "", Some(502)), ErrorClass::Transient);
        let missing_key = AwsError::Service {
            operation: "ec2:RunInstances",
            code: "InvalidKeyPair.NotFound".into(),
            message: String::new(),
            class: classify("InvalidKeyPair.NotFound", "", Some(400)),
        };
        assert!(missing_key.is_not_found(), "gone, for a deletion");
        assert_eq!(
            missing_key.missing_reference().class(),
            ErrorClass::NeedsUser,
            "the user's to fix, for a launch"
        );
        assert_eq!(classify("Whatever", "", Some(403)), ErrorClass::NeedsUser);
    }
}
