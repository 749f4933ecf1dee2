// The DOM of pairing without a link: the pairing id form, the code check and the progress line.
//
// The section's `data-state` is `form`, `waiting`, `code`, `confirmed`, `paired` or `failed`,
// for styling and tests.

/** The pairing section of the patient page. */
export class PairingView {
  #elements;

  constructor(document) {
    const byId = (id) => document.getElementById(id);
    this.#elements = {
      section: byId('pairing'),
      form: byId('pairing-form'),
      input: byId('pairing-id'),
      start: byId('pairing-start'),
      check: byId('pairing-check'),
      words: byId('pairing-words'),
      digits: byId('pairing-digits'),
      match: byId('pairing-match'),
      differ: byId('pairing-differ'),
      status: byId('pairing-status'),
    };
  }

  /**
   * Shows the form and calls `onSubmit(text)` with the typed pairing id. The page's CSP has
   * `form-action 'none'`, so the form is only ever submitted from script.
   */
  showForm(onSubmit) {
    const { section, form, input } = this.#elements;
    section.hidden = false;
    this.#setState('form');
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      onSubmit(input.value);
    });
    input.focus();
  }

  /** Enables or disables the form while a pairing runs. */
  setFormEnabled(enabled) {
    this.#elements.input.disabled = !enabled;
    this.#elements.start.disabled = !enabled;
  }

  /** Shows a progress line, with `state` as the section's `data-state`. */
  showProgress(state, text) {
    this.#setState(state);
    this.#elements.status.textContent = text;
  }

  /**
   * Shows the pairing code and resolves to true when the user presses "the codes match", false
   * for "the codes differ".
   */
  askCode({ words, digits }, text) {
    const { check, match, differ } = this.#elements;
    this.#elements.words.textContent = words.join(' ');
    this.#elements.digits.textContent = digits;
    check.hidden = false;
    this.showProgress('code', text);
    match.focus();
    return new Promise((resolve) => {
      // One controller removes both listeners, so a later pairing starts with none.
      const listening = new AbortController();
      const answer = (value) => () => {
        listening.abort();
        match.disabled = true;
        differ.disabled = true;
        resolve(value);
      };
      match.disabled = false;
      differ.disabled = false;
      match.addEventListener('click', answer(true), { signal: listening.signal });
      differ.addEventListener('click', answer(false), { signal: listening.signal });
    });
  }

  /** Hides the code after an answer or a failure. */
  hideCode() {
    this.#elements.check.hidden = true;
  }

  /** Removes the section once the page follows the session. */
  hide() {
    this.#setState('paired');
    this.#elements.section.hidden = true;
  }

  #setState(state) {
    this.#elements.section.dataset.state = state;
  }
}
