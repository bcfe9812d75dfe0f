// A minimal event emitter with VS Code's `Event<T>` shape, so the client layer needs no `vscode`.

export interface Disposable {
  dispose(): void;
}

export type Event<T> = (listener: (e: T) => void) => Disposable;

export class Emitter<T> {
  private listeners = new Set<(e: T) => void>();

  readonly event: Event<T> = (listener) => {
    this.listeners.add(listener);
    return { dispose: () => this.listeners.delete(listener) };
  };

  fire(e: T): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(e);
      } catch (err) {
        // A faulty listener must not stop the others, nor the message loop that fired it.
        console.error('agentd: event listener failed', err);
      }
    }
  }

  dispose(): void {
    this.listeners.clear();
  }
}
