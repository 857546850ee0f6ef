// The page's one alert line: every failed action shows its error there (the catalogue code
// included), never only in the console.

import { ApiError } from "./api.js";

const box = () => document.getElementById("error");
let signedOut = () => {};

// Called when an action failed because the session is gone (401): the page shows the login.
export function onSignedOut(callback) {
  signedOut = callback;
}

export function showError(exc) {
  box().textContent = exc instanceof ApiError ? exc.describe() : String(exc.message || exc);
  box().hidden = false;
  if (exc instanceof ApiError && exc.status === 401) signedOut();
}

export function clearError() {
  box().hidden = true;
  box().textContent = "";
}

// Wraps the action of a button or form: the default (a page load) is prevented, the alert
// cleared, and an error shown in it.
export function guarded(action) {
  return async (event) => {
    if (event && event.preventDefault) event.preventDefault();
    clearError();
    try {
      await action(event);
    } catch (exc) {
      showError(exc);
    }
  };
}
