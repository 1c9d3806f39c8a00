"""The running stack of one target: a weighted mean with per-pixel outlier rejection, updated
one registered frame at a time in constant memory.

Design (a satellite or plane in one frame must not reach the stack, and the night's stack must
be as deep as the batch integration of the same frames):

* The first ``warmup`` frames are kept and integrated together with the pipeline's
  leave-one-out sigma clipping (:func:`astroflow.integrate.reject_state`, ``sigma``), which
  rejects a trail even among 3-5 frames. Their accepted values start the statistics.
* From then on, per pixel and channel: the weight sum ``W``, the weighted mean ``m`` and the
  weighted sum of squared deviations ``M2`` of the accepted values (West's weighted form of
  Welford's update), and the count of accepted values. A new value ``x`` of weight ``w`` is
  rejected when ``x - m > high * s`` or ``m - x > low * s``, with
  ``s = sqrt(max(M2 / W, noise²) * (1 + 1/count))``: the pixel's own scatter (which includes a
  star's seeing changes), never below the new frame's background noise, widened by the
  uncertainty of ``m``. Accepted values update ``W, m, M2``; rejected ones are counted.
* NaN is "no data" (outside a frame's footprint) and never counted; a pixel nobody covered is 0
  in :meth:`RunningStack.image`, as in the pipeline's integrations.

Memory: four planes per channel (float32 ``W, m, M2``, uint16 count), plus the warm-up frames
until the statistics start; :meth:`state` and :meth:`restore` are its checkpoint.
"""

from __future__ import annotations

import numpy as np

_BAND = 512  # rows per band of the warm-up integration (its temporaries are frames × band)


class RunningStack:
    """Frames ``(C, ny, nx)`` float32, normalised to the stack's reference."""

    def __init__(self, shape: tuple[int, int, int], warmup: int = 5, low: float = 4.0, high: float = 3.0):
        self.shape, self.warmup, self.low, self.high = tuple(shape), warmup, low, high
        self.frames = 0
        self.buffer: list[tuple[np.ndarray, float, np.ndarray]] = []  # warm-up frames
        self.w = self.mean = self.m2 = self.count = None

    @property
    def started(self) -> bool:
        """Whether the running statistics hold the frames (else they wait in the warm-up)."""
        return self.w is not None

    def add(self, frame: np.ndarray, weight: float, noise) -> tuple[float, float]:
        """Add one frame (weight relative to the reference's; ``noise`` its background noise per
        channel, normalised); returns the fractions of its covered pixels rejected low and high
        (0, 0 while it waits in the warm-up: :meth:`add` then reports the whole warm-up's)."""
        if frame.shape != self.shape:
            raise ValueError(f"frame shape {frame.shape} differs from the stack's {self.shape}")
        self.frames += 1
        noise = np.asarray(noise, np.float32).reshape(-1)
        if not self.started:
            self.buffer.append((np.asarray(frame, np.float32), float(weight), noise))
            if len(self.buffer) >= self.warmup:
                return self._start()
            return 0.0, 0.0
        return self._update(frame, float(weight), noise)

    def _start(self) -> tuple[float, float]:
        from ..integrate import reject_state

        c, ny, nx = self.shape
        self.w = np.zeros(self.shape, np.float32)
        self.mean, self.m2 = np.zeros_like(self.w), np.zeros_like(self.w)
        self.count = np.zeros(self.shape, np.uint16)
        weights = np.array([b[1] for b in self.buffer], np.float32)[:, None]
        low = high = covered = 0
        for ch in range(c):
            for y0 in range(0, ny, _BAND):
                y1 = min(ny, y0 + _BAND)
                x = np.stack([b[0][ch, y0:y1].reshape(-1) for b in self.buffer])
                state = reject_state(x, "sigma", self.low, self.high)
                keep = (state == 0) & np.isfinite(x)
                ww = np.where(keep, weights, np.float32(0))
                xs = np.where(keep, x, np.float32(0))
                sw = ww.sum(axis=0)
                mean = np.divide((ww * xs).sum(axis=0), sw, out=np.zeros_like(sw), where=sw > 0)
                m2 = (ww * (xs - mean) ** 2).sum(axis=0)
                self.w[ch, y0:y1] = sw.reshape(y1 - y0, nx)
                self.mean[ch, y0:y1] = mean.reshape(y1 - y0, nx)
                self.m2[ch, y0:y1] = m2.reshape(y1 - y0, nx)
                self.count[ch, y0:y1] = keep.sum(axis=0).reshape(y1 - y0, nx)
                low += int((state == 1).sum())
                high += int((state == 2).sum())
                covered += int(np.isfinite(x).sum())
        self.buffer = []
        return low / max(covered, 1), high / max(covered, 1)

    def _update(self, frame: np.ndarray, weight: float, noise: np.ndarray) -> tuple[float, float]:
        w = np.float32(weight)
        low = high = covered = 0
        for ch in range(self.shape[0]):
            x, m, m2, sw, n = frame[ch], self.mean[ch], self.m2[ch], self.w[ch], self.count[ch]
            valid = np.isfinite(x)
            fresh = valid & (n == 0)  # no value yet here (the first frame to cover it)
            var = np.divide(m2, sw, out=np.zeros_like(m2), where=sw > 0)
            np.maximum(var, np.float32(noise[min(ch, len(noise) - 1)]) ** 2, out=var)
            var *= 1 + 1 / np.maximum(n, 1).astype(np.float32)
            d = np.where(valid, x - m, np.float32(0))
            is_high = (d * d > np.float32(self.high) ** 2 * var) & (d > 0) & ~fresh
            is_low = (d * d > np.float32(self.low) ** 2 * var) & (d < 0) & ~fresh
            take = valid & ~is_high & ~is_low
            sw_new = sw + np.where(take, w, np.float32(0))
            step = np.divide(w * d, sw_new, out=np.zeros_like(d), where=take)
            m += step
            m2 += np.where(take, w * d * (d - step), np.float32(0))  # w (x - m_old)(x - m_new)
            sw[:] = sw_new
            n += take
            low, high, covered = (
                low + int(is_low.sum()),
                high + int(is_high.sum()),
                covered + int(valid.sum()),
            )
        return low / max(covered, 1), high / max(covered, 1)

    def image(self) -> np.ndarray:
        """The current stack ``(C, ny, nx)`` float32; 0 where no frame has data."""
        if self.started:
            return np.where(self.w > 0, self.mean, np.float32(0))
        total = np.zeros(self.shape, np.float32)
        weight = np.zeros(self.shape, np.float32)
        for frame, w, _ in self.buffer:
            valid = np.isfinite(frame)
            total += np.where(valid, frame * np.float32(w), np.float32(0))
            weight += valid * np.float32(w)
        return np.divide(total, weight, out=np.zeros_like(total), where=weight > 0)

    def coverage(self) -> np.ndarray:
        """Accepted values per pixel of the first channel (uint16)."""
        if self.started:
            return self.count[0].copy()
        return sum(np.isfinite(b[0][0]).astype(np.uint16) for b in self.buffer)

    def state(self) -> dict[str, np.ndarray]:
        """The running statistics as arrays (once they have started), for a checkpoint."""
        return {
            "w": self.w,
            "mean": self.mean,
            "m2": self.m2,
            "count": self.count,
            "frames": np.array(self.frames),
        }

    def restore(self, state) -> None:
        """Continue from :meth:`state`'s arrays."""
        self.w, self.mean, self.m2, self.count = (np.array(state[k]) for k in ("w", "mean", "m2", "count"))
        self.frames = int(state["frames"])
        if self.w.shape != self.shape:
            raise ValueError(f"checkpoint shape {self.w.shape} differs from {self.shape}")
