// The sign-in page's DOM: one visible step at a time, the alert region for errors, a polite
// live region that announces each new step, field errors and busy buttons.
//
// Text from the relay only ever reaches the page through textContent, never as HTML.

const STEPS = ['checking', 'confirm', 'request', 'sent', 'device', 'code', 'signed-in'];

/** The sign-in page's elements. */
export class LoginView {
  #document;

  constructor(document) {
    this.#document = document;
  }

  /** Returns the element with this id. */
  element(id) {
    return this.#document.getElementById(id);
  }

  /**
   * Shows one step and hides the others, announces `announcement` and moves the focus to
   * `focusId`, or else to the step's heading, so keyboard and screen reader users start there.
   */
  showStep(name, { announcement, focusId } = {}) {
    for (const step of STEPS) {
      this.element(`step-${step}`).hidden = step !== name;
    }
    const section = this.element(`step-${name}`);
    this.announce(announcement ?? section.querySelector('h1').textContent);
    const target = focusId === undefined ? section.querySelector('h1') : this.element(focusId);
    target.focus();
  }

  /** Puts `text` into the polite live region, replacing what it contained. */
  announce(text) {
    const line = this.#document.createElement('p');
    line.textContent = text;
    this.element('announcer').replaceChildren(line);
  }

  /** Shows an error in the alert region. */
  showError(text) {
    this.element('message').textContent = text;
  }

  clearError() {
    this.element('message').textContent = '';
  }

  /** Shows or, with null, clears the error of one input, marking the input invalid. */
  showFieldError(inputId, text) {
    const input = this.element(inputId);
    const error = this.element(`${inputId}-error`);
    error.textContent = text ?? '';
    error.hidden = text === null;
    if (text === null) {
      input.removeAttribute('aria-invalid');
    } else {
      input.setAttribute('aria-invalid', 'true');
      input.focus();
    }
  }

  /** Disables a button while its request runs, so a second press sends nothing. */
  setBusy(button, busy) {
    button.disabled = busy;
    button.setAttribute('aria-busy', String(busy));
  }

  /** Shows that a link was requested; `expiry` is a duration such as `15 minutes`. */
  showSent(expiry) {
    const text =
      'If this address belongs to an account, a sign-in link is on its way. ' +
      `It expires in ${expiry}.`;
    this.element('sent-text').textContent = text;
    this.showStep('sent', { announcement: text });
  }

  /** Shows that a device's sign-in was approved and that the user should go back to it. */
  showDevice(totpRequired) {
    const totp = this.element('device-totp');
    totp.hidden = !totpRequired;
    const steps = ['Sign-in approved. Return to the device where you started signing in.'];
    if (totpRequired) {
      steps.push(totp.textContent);
    }
    this.showStep('device', { announcement: steps.join(' ') });
  }

  /** Shows who is signed in and, for an admin without TOTP, the offer to set it up. */
  showSignedIn(user, options) {
    this.showUser(user);
    this.showStep('signed-in', options);
  }

  /** Fills in the signed-in user without changing the step or the focus. */
  showUser(user) {
    this.element('signed-in-text').textContent = `Signed in as ${user.email} (${user.role})`;
    this.element('totp-offer').hidden = !(user.role === 'admin' && !user.totpEnabled);
  }

  /** Shows the new TOTP secret as text for manual entry, and the field for its first code. */
  showEnrolment({ secretBase32, otpauthUri }) {
    this.element('totp-secret').textContent = secretBase32;
    this.element('totp-uri').textContent = otpauthUri;
    this.element('totp-start').hidden = true;
    this.element('totp-enrol').hidden = false;
    this.announce('Secret key ready. Add it to your authenticator app, then enter a code.');
    this.element('activate-code').focus();
  }

  /** Replaces the set-up offer by the recovery codes, which the relay returns only once. */
  showRecoveryCodes(codes) {
    const items = codes.map((code) => {
      const item = this.#document.createElement('li');
      const text = this.#document.createElement('code');
      text.textContent = code;
      item.append(text);
      return item;
    });
    this.element('recovery-codes').replaceChildren(...items);
    this.clearEnrolment();
    this.element('totp-offer').hidden = true;
    this.element('recovery').hidden = false;
    this.announce('Two-factor authentication is on. Store your recovery codes now.');
    this.element('recovery-title').focus();
  }

  /** Removes the recovery codes from the page. */
  clearRecoveryCodes() {
    this.element('recovery-codes').replaceChildren();
    this.element('recovery').hidden = true;
  }

  /** Removes the TOTP secret from the page and resets the set-up offer. */
  clearEnrolment() {
    this.element('totp-secret').textContent = '';
    this.element('totp-uri').textContent = '';
    this.element('activate-code').value = '';
    this.element('totp-enrol').hidden = true;
    this.element('totp-start').hidden = false;
  }
}
