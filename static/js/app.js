// Small progressive enhancements; every page works without this file.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-print]");
  if (button) {
    event.preventDefault();
    window.print();
  }
});

// The card form posts straight to PayTR, which takes expiry_month and expiry_year. Without this
// script the customer types them into two boxes drawn as one; with it, into one MM/YY field (what
// card autofill fills), split into PayTR's two fields as it is typed and before the form is sent.
function readExpiry(text) {
  const match = /^\s*(\d{1,2})\s*[\/.\- ]?\s*(\d{2}|\d{4})\s*$/.exec(text);
  if (!match || +match[1] < 1 || +match[1] > 12) return null;
  return { month: match[1].padStart(2, "0"), year: match[2].slice(-2) };
}

document.querySelectorAll("form[data-card-form]").forEach((form) => {
  const group = form.querySelector("[data-expiry]");
  const month = form.querySelector("[name=expiry_month]");
  const year = form.querySelector("[name=expiry_year]");
  if (!group || !month || !year) return;
  const field = document.createElement("div");
  field.className = "field";
  field.innerHTML = '<label for="cc_exp">Expiry date</label>' +
    '<input type="text" id="cc_exp" autocomplete="cc-exp" inputmode="numeric" maxlength="7" placeholder="MM/YY" required>';
  group.replaceWith(field);
  for (const input of [month, year]) {
    input.type = "hidden";
    input.removeAttribute("aria-label");
    form.append(input);
  }
  const joined = field.querySelector("input");
  const split = () => {
    const expiry = readExpiry(joined.value);
    month.value = expiry ? expiry.month : "";
    year.value = expiry ? expiry.year : "";
    joined.setCustomValidity(expiry ? "" : "Enter the expiry date as MM/YY, for example 08/29.");
    return expiry;
  };
  joined.addEventListener("input", split);
  form.addEventListener("submit", (event) => {
    const number = form.querySelector("[name=card_number]");
    if (number) number.value = number.value.replace(/\s+/g, "");  // PayTR wants the digits only
    if (!split()) {
      event.preventDefault();
      joined.reportValidity();
    }
  });
});
