// Progressive enhancement only: every page works without it.
document.addEventListener("click", (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  navigator.clipboard?.writeText(button.dataset.copy).then(() => {
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = label; }, 1200);
  });
});

// "Generate a secret": 32 random bytes as hex, from the browser's cryptographic generator.
document.addEventListener("click", (event) => {
  const button = event.target.closest("button.generate");
  if (!button || !window.crypto?.getRandomValues) return;
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  const field = document.getElementById(button.dataset.target);
  field.value = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  field.focus();
});
