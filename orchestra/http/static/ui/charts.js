// A small live line chart on a <canvas>: the last `capacity` samples of one figure, drawn
// to the canvas's CSS size at the screen's pixel density. No library, no layout of its own.

export class LineChart {
  /** canvas: the <canvas>; options: capacity (samples kept), unit (shown with the top value). */
  constructor(canvas, { capacity = 120, unit = "" } = {}) {
    this.canvas = canvas;
    this.capacity = capacity;
    this.unit = unit;
    this.samples = [];
  }

  /** Add a sample (a number, or null for "no figure": drawn as a gap) and redraw. */
  push(value) {
    this.samples.push(Number.isFinite(value) ? value : null);
    if (this.samples.length > this.capacity) this.samples.shift();
    this.canvas.dataset.samples = String(this.samples.length);
    this.draw();
  }

  draw() {
    const canvas = this.canvas;
    const ratio = globalThis.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const context = canvas.getContext("2d");
    if (!context) return;
    const style = getComputedStyle(canvas);
    const ink = style.color || "#444";
    context.clearRect(0, 0, width, height);
    const values = this.samples.filter((v) => v !== null);
    const top = niceCeiling(Math.max(1, ...values));
    const pad = 4 * ratio;
    const x = (i) => pad + (i / Math.max(1, this.capacity - 1)) * (width - 2 * pad);
    const y = (v) => height - pad - (v / top) * (height - 2 * pad);

    context.globalAlpha = 0.25;
    context.strokeStyle = ink;
    context.lineWidth = ratio;
    context.beginPath();
    context.moveTo(pad, y(top / 2));
    context.lineTo(width - pad, y(top / 2));
    context.stroke();

    context.globalAlpha = 1;
    context.lineWidth = 2 * ratio;
    context.strokeStyle = style.getPropertyValue("--accent").trim() || ink;
    context.beginPath();
    const offset = this.capacity - this.samples.length;
    let drawing = false;
    this.samples.forEach((value, i) => {
      if (value === null) {
        drawing = false;
        return;
      }
      if (drawing) context.lineTo(x(offset + i), y(value));
      else context.moveTo(x(offset + i), y(value));
      drawing = true;
    });
    context.stroke();

    context.fillStyle = ink;
    context.font = `${11 * ratio}px system-ui, sans-serif`;
    context.textBaseline = "top";
    context.fillText(`${top}${this.unit}`, pad, pad);
  }
}

/** The smallest of 1, 2, 5 × 10^k that is at least `value`. */
export function niceCeiling(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) {
    if (step * power >= value) return step * power;
  }
  return 10 * power;
}
