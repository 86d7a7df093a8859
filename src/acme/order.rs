//! One ACME order, start to finish, with `instant-acme`: the account (created once and
//! kept in storage), the challenges answered through [`Challenges`], the CSR for a fresh
//! key, and the issued chain saved next to that key.

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};

use super::challenge::Challenges;
use super::storage::Storage;
use crate::config::model::{Acme, AcmeChallenge};

fn err(context: &str) -> impl FnOnce(instant_acme::Error) -> String + '_ {
    move |e| format!("{context}: {e}")
}

async fn account(settings: &Acme, storage: &Storage) -> Result<Account, String> {
    let builder = || match &settings.ca {
        Some(ca) => Account::builder_with_root(ca).map_err(err("ACME client")),
        None => Account::builder().map_err(err("ACME client")),
    };
    if let Ok(text) = std::fs::read_to_string(storage.account_path()) {
        if let Ok(credentials) = serde_json::from_str::<AccountCredentials>(&text) {
            return builder()?
                .from_credentials(credentials)
                .await
                .map_err(err("ACME account from storage"));
        }
    }
    let contact = settings.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder()?
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory.clone(),
            None,
        )
        .await
        .map_err(err("ACME account"))?;
    let text = serde_json::to_string(&credentials).map_err(|e| e.to_string())?;
    storage
        .write_private(&storage.account_path(), text.as_bytes())
        .map_err(|e| format!("storing the ACME account: {e}"))?;
    Ok(account)
}

/// Orders a certificate for the settings' domains and stores it.
pub async fn order(
    settings: &Acme,
    storage: &Storage,
    challenges: &Arc<Challenges>,
) -> Result<(), String> {
    let account = account(settings, storage).await?;
    let identifiers: Vec<Identifier> = settings
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(err("ACME order"))?;
    let kind = match settings.challenge {
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        AcmeChallenge::Http01 => ChallengeType::Http01,
    };
    let mut published = Published {
        challenges,
        items: Vec::new(),
    };
    {
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(err("ACME authorization"))?;
            if authorization.status == AuthorizationStatus::Valid {
                continue;
            }
            let mut challenge = authorization
                .challenge(kind.clone())
                .ok_or_else(|| format!("the ACME server offers no {kind:?} challenge"))?;
            let domain = match challenge.identifier().identifier {
                Identifier::Dns(name) => name.clone(),
                other => return Err(format!("unexpected ACME identifier {other:?}")),
            };
            let key_authorization = challenge.key_authorization();
            match settings.challenge {
                AcmeChallenge::TlsAlpn01 => {
                    challenges.publish_tls_alpn(&domain, key_authorization.digest().as_ref())?;
                    published.items.push(Challenge::TlsAlpn(domain));
                }
                AcmeChallenge::Http01 => {
                    let token = challenge.token.clone();
                    challenges.publish_http(&token, key_authorization.as_str());
                    published.items.push(Challenge::Http(token));
                }
            }
            challenge
                .set_ready()
                .await
                .map_err(err("ACME challenge ready"))?;
        }
    }
    let retries = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .timeout(Duration::from_secs(60));
    let status = order.poll_ready(&retries).await.map_err(err("ACME order"));
    drop(published);
    match status? {
        OrderStatus::Ready => {}
        other => return Err(format!("ACME order ended {other:?}: a challenge failed")),
    }
    let key = rcgen::KeyPair::generate().map_err(|e| format!("certificate key: {e}"))?;
    let csr = rcgen::CertificateParams::new(settings.domains.clone())
        .and_then(|params| params.serialize_request(&key))
        .map_err(|e| format!("certificate request: {e}"))?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(err("ACME finalize"))?;
    let chain = order
        .poll_certificate(&retries)
        .await
        .map_err(err("ACME certificate"))?;
    storage
        .save_certificate(&chain, &key.serialize_pem())
        .map_err(|e| format!("storing the certificate: {e}"))
}

enum Challenge {
    TlsAlpn(String),
    Http(String),
}

/// The challenges an order answers, withdrawn when it is done with them, and also when
/// the order is dropped half-way (its block left the config): an http-01 token left
/// published would make every plain connection look for one.
struct Published<'a> {
    challenges: &'a Challenges,
    items: Vec<Challenge>,
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        for done in self.items.drain(..) {
            match done {
                Challenge::TlsAlpn(domain) => self.challenges.withdraw_tls_alpn(&domain),
                Challenge::Http(token) => self.challenges.withdraw_http(&token),
            }
        }
    }
}
