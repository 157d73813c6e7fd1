//! Email channel: one plain-text mail per notification through SMTP (lettre, rustls), with
//! STARTTLS, implicit TLS or plain transport per configuration. Used when Telegram is down, so
//! the text tells the operator how to decide without it.

use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailTls {
    /// Plain SMTP (a local relay or a test listener).
    None,
    /// SMTP upgraded with STARTTLS (port 587).
    Starttls,
    /// SMTP over implicit TLS (port 465).
    Tls,
}

#[derive(Debug, Clone)]
pub struct EmailSettings {
    pub host: String,
    pub port: u16,
    pub tls: EmailTls,
    pub username: Option<String>,
    pub password: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    pub timeout: Duration,
}

pub struct EmailChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl EmailChannel {
    pub fn new(settings: &EmailSettings) -> Result<Self, String> {
        let builder = match settings.tls {
            EmailTls::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            }
            EmailTls::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.host)
                    .map_err(|e| format!("SMTP host {}: {e}", settings.host))?
            }
            EmailTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host)
                .map_err(|e| format!("SMTP host {}: {e}", settings.host))?,
        };
        let mut builder = builder.port(settings.port).timeout(Some(settings.timeout));
        if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        let from = settings
            .from
            .parse()
            .map_err(|e| format!("fallback.email.from {:?}: {e}", settings.from))?;
        let to = settings
            .to
            .iter()
            .map(|addr| {
                addr.parse()
                    .map_err(|e| format!("fallback.email.to {addr:?}: {e}"))
            })
            .collect::<Result<Vec<Mailbox>, String>>()?;
        Ok(Self {
            transport: builder.build(),
            from,
            to,
        })
    }

    /// Sends to `fallback.email.to` and to `extra`. An address that does not parse is left
    /// out with a warning (configuration checked each target's form; the relay judges the
    /// rest), so one bad address never stops the others' mail.
    pub async fn send_to(&self, extra: &[&str], subject: &str, body: String) -> Result<(), String> {
        let mut message = Message::builder().from(self.from.clone()).subject(subject);
        let mut recipients: Vec<Mailbox> = self.to.clone();
        for address in extra {
            match address.parse::<Mailbox>() {
                Ok(mailbox) if !recipients.contains(&mailbox) => recipients.push(mailbox),
                Ok(_) => {}
                Err(error) => tracing::warn!(address, %error, "an email target is not an address"),
            }
        }
        for to in recipients {
            message = message.to(to);
        }
        let message = message
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| format!("cannot build the mail: {e}"))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| format!("SMTP delivery failed: {e}"))
    }
}
