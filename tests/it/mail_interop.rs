//! The mail plugin as real peers see it: what an audit against postfix, dovecot, getmail,
//! fetchmail and curl found, each pinned with a client CI has (Python, curl, raw sockets).

use crate::mail::{Mail, new_files, py};

/// The `Received:` header names the recipient only when there is one (RFC 5321 4.4's FOR
/// takes one path), as postfix does. It listed them all, and every copy has the same header:
/// each recipient saw the others, a Bcc recipient included.
#[test]
fn received_shows_no_recipient_to_another() {
    let m = Mail::start(&[]);
    let (code, out, err) = py(
        r#"
import smtplib, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10)
s.helo('c')
# ann is a Bcc: in the envelope only.
print(s.sendmail('a@b.test', ['joe@example.com', 'ann@example.com'], 'To: joe@example.com\r\nSubject: bcc\r\n\r\nhi\r\n'))
s.quit()
"#,
        &[&m.smtp()],
    );
    assert_eq!(code, 0, "{out}{err}");
    let joe = new_files(&m.maildir("joe"));
    assert_eq!(joe.len(), 1);
    assert!(!joe[0].contains("ann@"), "the Bcc shows: {}", joe[0]);
    assert!(
        joe[0].contains(")\n\tby mx.test with smtp id "),
        "{}",
        joe[0]
    );
    let ann = new_files(&m.maildir("ann"));
    assert!(
        !ann[0].replace("To: joe@example.com\n", "").contains("joe@"),
        "{}",
        ann[0]
    );
    // One recipient: named, as before.
    let (code, out, err) = py(
        r#"
import smtplib, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10)
s.helo('c')
print(s.sendmail('a@b.test', ['ann@example.com'], 'Subject: one\r\n\r\nhi\r\n'))
s.quit()
"#,
        &[&m.smtp()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        new_files(&m.maildir("ann"))
            .iter()
            .any(|f| f.contains("\n\tfor <ann@example.com>; ")),
        "{:?}",
        new_files(&m.maildir("ann"))
    );
}
