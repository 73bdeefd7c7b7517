import { cloneElement, isValidElement, type ReactElement, type ReactNode, useId } from "react";

type Control = ReactElement<{ id?: string; "aria-describedby"?: string; "aria-invalid"?: boolean }>;

/** A labelled control with its hint or the server's error for that field (the hint
 * and error describe the control; they are not part of its name). */
export function Field({ label, error, hint, children, id }: { label: string; error?: string; hint?: ReactNode; children: Control; id?: string }) {
  const controlId = useId();
  const noteId = `${controlId}-note`;
  const note = error ?? hint;
  const control = isValidElement(children)
    ? cloneElement(children, { id: controlId, "aria-describedby": note ? noteId : undefined, "aria-invalid": error ? true : undefined })
    : children;
  return (
    <div className={`field ${error ? "invalid" : ""}`} data-field={id}>
      <label className="label" htmlFor={controlId}>
        {label}
      </label>
      {control}
      {error ? (
        <span className="field-error" role="alert" id={noteId} data-testid={id ? `error-${id}` : undefined}>
          {error}
        </span>
      ) : hint ? (
        <span className="hint" id={noteId}>
          {hint}
        </span>
      ) : null}
    </div>
  );
}

export function FormError({ message }: { message?: string | null }) {
  if (!message) return null;
  return (
    <div className="form-error" role="alert" data-testid="form-error">
      {message}
    </div>
  );
}
