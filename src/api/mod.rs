//! The custom resources, group `byoc.dev`, version `v1alpha1`.

pub mod cloud_account;
pub mod compute_cluster;
pub mod conditions;

pub use cloud_account::{
    AccountPhase, CloudAccount, CloudAccountSpec, CloudAccountStatus, RoleHop, SecretRef,
};
pub use compute_cluster::{
    CapacityType, ClusterIam, ClusterPhase, ComputeCluster, ComputeClusterSpec,
    ComputeClusterStatus, DeletionPolicy, EndpointPolicy, HttpTokens, IngressRule, InstanceStatus,
    Interruption, Market, MetadataOptions, NatGateways, NetworkSpec, NodeGroupSpec, Peering,
    Protocol, Rebalance, Rollout, RootVolume, SubnetKind, VolumeType,
};

use kube::CustomResourceExt;

/// Regular expressions of the schema (Go RE2 syntax, as the apiserver runs them).
pub mod patterns {
    pub const REGION: &str = r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]+$";
    pub const ZONE: &str = r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]+[a-z]$";
    pub const ROLE_ARN: &str =
        r"^arn:aws(-[a-z]+)*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$";
    pub const EXTERNAL_ID: &str = r"^[A-Za-z0-9+=,.@:/_-]+$";
    pub const DNS_SUBDOMAIN: &str =
        r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
    pub const DNS_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
    pub const NAMESPACE_OR_STAR: &str = r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$";
    pub const IPV4_CIDR: &str = r"^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$";
    pub const VPC_ID: &str = r"^vpc-[0-9a-f]{8,17}$";
    pub const SUBNET_ID: &str = r"^subnet-[0-9a-f]{8,17}$";
    pub const ROUTE_TABLE_ID: &str = r"^rtb-[0-9a-f]{8,17}$";
    pub const ACCOUNT_ID: &str = r"^[0-9]{12}$";
    /// USD as a decimal: `40`, `12.5`, `0.0832` (at most a hundredth of a
    /// cent).
    pub const USD: &str = r"^[0-9]{1,7}(\.[0-9]{1,4})?$";
    /// A VPC endpoint service, as named after `com.amazonaws.<region>.`:
    /// `s3`, `ecr.dkr`, `ssmmessages`.
    pub const ENDPOINT_SERVICE: &str = r"^[a-z0-9]+([.-][a-z0-9]+)*$";
    pub const AMI_ID: &str = r"^ami-[0-9a-f]{8,17}$";
    /// A Secret data key.
    pub const SECRET_KEY: &str = r"^[-._a-zA-Z0-9]+$";
    /// EC2 key pair names: printable ASCII.
    pub const KEY_PAIR_NAME: &str = r"^[ -~]+$";
    pub const SSH_PUBLIC_KEY: &str =
        r"^(ssh-rsa|ssh-ed25519|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,3}( [ -~]*)?$";
    /// An IAM managed policy: AWS's or an account's, with an optional path.
    pub const POLICY_ARN: &str = r"^arn:aws[a-z-]*:iam::(aws|[0-9]{12}):policy/([A-Za-z0-9+=,.@_-]+/)*[A-Za-z0-9+=,.@_-]{1,128}$";
    /// A duration: `90s`, `5m`, `1h30m`.
    pub const DURATION: &str = r"^([0-9]+(h|m|s))+$";
    /// IAM role and instance profile names.
    pub const IAM_NAME: &str = r"^[A-Za-z0-9+=,.@_-]+$";
    pub const SECURITY_GROUP_ID: &str = r"^sg-[0-9a-f]{8,17}$";
    /// A KMS key ID, alias (`alias/...`) or ARN of either.
    pub const KMS_KEY: &str = r"^(arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key|alias)/[A-Za-z0-9/_-]+|alias/[A-Za-z0-9/_-]+|[0-9a-f-]{36}|mrk-[0-9a-f]{32})$";
    /// A KMS key's ARN (never an alias: a policy grants keys by ARN).
    pub const KMS_KEY_ARN: &str =
        r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/(mrk-[0-9a-f]{32}|[0-9a-f-]{36})$";
    pub const INSTANCE_TYPE: &str = r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$";
}

/// The CRDs as YAML documents, one per kind: `(file name, yaml)`.
pub fn crd_documents() -> Result<Vec<(&'static str, String)>, serde_yaml_ng::Error> {
    Ok(vec![
        (
            "byoc.dev_cloudaccounts.yaml",
            serde_yaml_ng::to_string(&CloudAccount::crd())?,
        ),
        (
            "byoc.dev_computeclusters.yaml",
            serde_yaml_ng::to_string(&ComputeCluster::crd())?,
        ),
    ])
}
