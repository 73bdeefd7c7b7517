import { type FormEvent, useState } from "react";
import { ApiError, post, setSession, SessionFields } from "../api/auth";
import { problem, type Problem } from "../api/errors";
import { Field, FormError } from "../components/Field";
import { graphql } from "../gql";
import { Link, navigate } from "../lib/router";

void SessionFields;

const Login = graphql(`
  mutation Login($input: LoginInput!) {
    login(input: $input) {
      ...SessionFields
    }
  }
`);

const Register = graphql(`
  mutation Register($input: RegisterInput!) {
    register(input: $input) {
      ...SessionFields
    }
  }
`);

function next(): string {
  const target = new URLSearchParams(window.location.search).get("next");
  // Only paths of this app: never an open redirect.
  return target && target.startsWith("/") && !target.startsWith("//") ? target : "/portfolio";
}

export function SignIn({ mode }: { mode: "signin" | "signup" }) {
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [otp, setOtp] = useState("");
  const [needsCode, setNeedsCode] = useState(false);
  const [error, setError] = useState<Problem | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      if (mode === "signup") {
        const data = await post(Register, { input: { email, password } });
        setSession(data.register);
      } else {
        const data = await post(Login, { input: { email, password, otp: needsCode ? otp.trim() : null } });
        setSession(data.login);
      }
      navigate(next(), true);
    } catch (e) {
      if (e instanceof ApiError && e.code === "TWO_FACTOR_REQUIRED" && !needsCode) {
        setNeedsCode(true);
      } else {
        setError(problem(e) ?? { message: String(e), fields: {}, extensions: {} });
      }
    } finally {
      setBusy(false);
    }
  };

  const title = mode === "signup" ? "Create your account" : needsCode ? "Two-factor authentication" : "Sign in";
  return (
    <section className="auth">
      <form className="card form" onSubmit={submit} data-testid="auth-form">
        <h1>{title}</h1>
        {mode === "signup" ? <p className="muted">Every account starts with 10,000 USD of paper money.</p> : null}
        {needsCode ? (
          <>
            <p className="muted">Enter the 6-digit code from your authenticator app, or one of your recovery codes.</p>
            <Field label="Code" id="otp" error={error?.fields.otp}>
              <input name="otp" autoFocus inputMode="numeric" autoComplete="one-time-code" value={otp} onChange={(e) => setOtp(e.target.value)} />
            </Field>
          </>
        ) : (
          <>
            <Field label="Email" id="email" error={error?.fields.email}>
              <input name="email" type="email" autoComplete="email" required value={email} onChange={(e) => setEmail(e.target.value)} />
            </Field>
            <Field label="Password" id="password" error={error?.fields.password} hint={mode === "signup" ? "10 to 128 characters, not containing your email's name" : undefined}>
              <input
                name="password"
                type="password"
                autoComplete={mode === "signup" ? "new-password" : "current-password"}
                required
                value={password}
                onChange={(e) => setPassword(e.target.value)}
              />
            </Field>
          </>
        )}
        <FormError message={error && !error.fields.email && !error.fields.password ? error.message : null} />
        <button className="primary wide" type="submit" disabled={busy}>
          {busy ? "Please wait…" : mode === "signup" ? "Create account" : needsCode ? "Verify" : "Sign in"}
        </button>
        <p className="muted center">
          {mode === "signup" ? (
            <>
              Already have an account? <Link to="/signin">Sign in</Link>
            </>
          ) : needsCode ? (
            <button type="button" className="link" onClick={() => (setNeedsCode(false), setOtp(""))}>
              Back
            </button>
          ) : (
            <>
              New here? <Link to="/signup">Create an account</Link>
            </>
          )}
        </p>
      </form>
    </section>
  );
}
