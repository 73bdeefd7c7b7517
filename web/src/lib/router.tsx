import type { AnchorHTMLAttributes, MouseEvent } from "react";
import { Store, useStore } from "./store";

/** History-API routing: the server answers every app path with index.html. */
export const location = new Store(window.location.pathname + window.location.search);

window.addEventListener("popstate", () => location.set(window.location.pathname + window.location.search));

export function navigate(to: string, replace = false): void {
  if (replace) history.replaceState(null, "", to);
  else history.pushState(null, "", to);
  location.set(to);
  window.scrollTo(0, 0);
}

export function usePath(): string {
  return useStore(location).split("?")[0];
}

export function Link({ to, ...props }: { to: string } & AnchorHTMLAttributes<HTMLAnchorElement>) {
  const onClick = (event: MouseEvent<HTMLAnchorElement>) => {
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
    event.preventDefault();
    navigate(to);
  };
  return <a href={to} onClick={onClick} {...props} />;
}
