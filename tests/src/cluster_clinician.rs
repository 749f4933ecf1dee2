//! A clinician whose device talks to one node of a [`Cluster`] directly,
//! as the publishers of the cluster tests do. The device signs in through
//! the load balancer, then creates sessions and publishes on its node.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sealcast_client::auth::Authorizer;
use url::Url;

use crate::cluster::Cluster;
use crate::faults::{BackgroundPublish, Consultation};
use crate::session::LiveSession;
use crate::staff::StaffDevice;

/// A signed-in clinician's device bound to one node.
pub struct NodeClinician {
    /// The sign-in, kept alive because it owns the device's key store.
    _staff: StaffDevice,
    /// The device's credentials, with DPoP proofs that name the public URL.
    auth: Arc<dyn Authorizer>,
    /// Base URL of the node, `https://localhost:NODE_PORT/`.
    node_url: Url,
    /// The development certificate that every node serves.
    ca_cert: PathBuf,
}

impl NodeClinician {
    /// Creates a new organization with one clinician, signs a device in
    /// through the cluster's public URL, and binds it to node `node`.
    pub async fn sign_in(cluster: &Cluster, node: usize) -> Self {
        let staff = StaffDevice::clinician_at(
            cluster.data_dir(),
            &cluster.public_url(),
            &cluster.ca_cert(),
        )
        .await;
        let auth = cluster.node_authorizer(node, staff.authorizer());
        NodeClinician {
            _staff: staff,
            auth,
            node_url: cluster.node_url(node),
            ca_cert: cluster.ca_cert(),
        }
    }

    /// Creates a session on the clinician's node.
    pub async fn create_session(&self) -> LiveSession {
        LiveSession::create_at(&self.node_url, &self.ca_cert, Arc::clone(&self.auth)).await
    }

    /// Connects a publisher of `session` to the clinician's node and starts
    /// publishing `consultation` in the background, with equal pauses that
    /// add up to `span`.
    pub async fn publish(
        &self,
        session: &LiveSession,
        consultation: &Consultation,
        span: Duration,
    ) -> BackgroundPublish {
        let publisher = session
            .publisher_at(&self.node_url, Arc::clone(&self.auth))
            .await;
        let pause = span / consultation.published.len() as u32;
        BackgroundPublish::start(publisher, consultation.published.clone(), pause)
    }
}
