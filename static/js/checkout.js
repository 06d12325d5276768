// The checkout's enhancements; the page works without them (a fixed-height iframe, a button).

// PayTR's iFrame API, step 2: PayTR's own resizer script (loaded just before this file, from PayTR's
// host, or the emulator's compatible one) grows the iframe to the payment page's height.
if (typeof window.iFrameResize === "function" && document.getElementById("paytriframe")) {
  window.iFrameResize({}, "#paytriframe");
}

// "How do you want to pay?": a changed choice opens its payment form at once (the form says so
// above its button), and only once, even if the choice changes again while the page loads.
// data-pay-choice holds the answer this checkout was made for.
document.querySelectorAll("form[data-pay-choice]").forEach((form) => {
  const button = form.querySelector("[data-pay-choice-submit]");
  const send = () => {
    if (form.dataset.sending) return;
    form.dataset.sending = "1";
    form.setAttribute("aria-busy", "true");
    if (form.requestSubmit) form.requestSubmit(); else form.submit();
  };
  if (button) button.hidden = true;
  form.addEventListener("change", (event) => {
    if (event.target.type === "radio") send();
  });
  // Chosen while the page was still loading, before this script ran: act on it now.
  const checked = form.querySelector("input[type=radio]:checked");
  if (checked && checked.value !== form.dataset.payChoice) send();
});
