// The console's progressive enhancement: every page works without it.
// - [data-copy=ID]: copies the value of the element ID to the clipboard.
// - form[data-confirm]: asks before submitting.
// - form[data-busy]: disables its buttons and says what is happening while
//   the request runs (a Synchronize can take a while on a large tenant).
// - [data-refresh=SECONDS]: reloads the page after that long (a preview
//   being decided in the background).
"use strict";
const refresh = document.querySelector("[data-refresh]");
if (refresh) setTimeout(() => window.location.reload(), Number(refresh.dataset.refresh) * 1000);
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  if (!field) return;
  const text = field.value !== undefined ? field.value : field.textContent;
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {
    field.select && field.select();
    document.execCommand && document.execCommand("copy");
  }
  const label = button.textContent;
  button.textContent = "Copied";
  setTimeout(() => { button.textContent = label; }, 1500);
});
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
    return;
  }
  if (form.dataset.busy) {
    const status = form.querySelector(".busy");
    if (status) status.textContent = form.dataset.busy;
    form.setAttribute("aria-busy", "true");
    // Disable after the submit has taken the button's name and value.
    setTimeout(() => form.querySelectorAll("button").forEach((b) => { b.disabled = true; }), 0);
  }
});
