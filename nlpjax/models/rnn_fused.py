"""The recurrent scan with a hand-written backward pass (``jax.custom_vjp``).

Autodiff of ``lax.scan`` puts the recurrent weight gradient h_{t-1}^T dG_t, a rank-B
update, inside the backward loop. Here the backward scan keeps only the recurrent matmul
dG_t W_h^T that carries the gradient to the previous state; the gate gradients of every
step are stacked, and dW_h is one (L*B, D)^T x (L*B, G) matmul after the loop. The
forward saves the activated gates, so nothing is recomputed. Results equal autodiff of
``rnn.scan_cell`` (the reference) up to float rounding; tests check it for every cell,
with and without masks, forward and reversed.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

F32 = jnp.float32


def batch_layout(carry: tuple) -> tuple:
    """Pins each (B, D) carry leaf to the batch layout (a no-op without a mesh).

    The project's rule for scans over time on a mesh (README, "Writing a task"): jax 0.10.2
    computed wrong gradients for a scan whose carry was left free while its weight was
    sharded over (fsdp, tensor)."""
    return tuple(nn.with_logical_constraint(x, ("act_batch", None)) for x in carry)


def dot_f32(a, b):
    """a @ b in b's (the weights') dtype, accumulated and returned in float32."""
    return jnp.dot(a.astype(b.dtype), b, preferred_element_type=F32)


# Each cell: fwd(params, carry, gx) -> (new carry, residuals); bwd(params, residuals,
# d new carry) -> (d carry, d gx, d of the recurrent pre-activation or None if the same).


def _lstm_fwd(params, carry, gx_BG):
    c_BD, h_BD = carry
    i, f, g, o = jnp.split(gx_BG + dot_f32(h_BD, params["recurrent_kernel"]), 4, axis=-1)
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    c_new = f * c_BD + i * g
    tanh_c = jnp.tanh(c_new)
    return (c_new, o * tanh_c), (i, f, g, o, c_BD, tanh_c)


def _lstm_bwd(params, res, d_carry):
    i, f, g, o, c_prev, tanh_c = res
    dc, dh = d_carry
    dc = dc + dh * o * (1.0 - tanh_c**2)
    d_gates = jnp.concatenate(
        [dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g**2),
         dh * tanh_c * o * (1 - o)],
        axis=-1,
    )  # fmt: skip
    return (dc * f, dot_f32(d_gates, params["recurrent_kernel"].T)), d_gates, None


def _gru_fwd(params, carry, gx_BG):
    (h_BD,) = carry
    hr, hz, hn = jnp.split(
        dot_f32(h_BD, params["recurrent_kernel"]) + params["recurrent_bias"].astype(F32)[None, :],
        3,
        axis=-1,
    )
    xr, xz, xn = jnp.split(gx_BG, 3, axis=-1)
    r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    return ((1.0 - z) * n + z * h_BD,), (r, z, n, hn, h_BD)


def _gru_bwd(params, res, d_carry):
    r, z, n, hn, h_prev = res
    (dh,) = d_carry
    dn_pre = dh * (1.0 - z) * (1.0 - n**2)
    dr_pre = dn_pre * hn * r * (1.0 - r)
    dz_pre = dh * (h_prev - n) * z * (1.0 - z)
    d_gx = jnp.concatenate([dr_pre, dz_pre, dn_pre], axis=-1)
    d_gh = jnp.concatenate([dr_pre, dz_pre, dn_pre * r], axis=-1)
    return (dh * z + dot_f32(d_gh, params["recurrent_kernel"].T),), d_gx, d_gh


def _elman_fwd(params, carry, gx_BG):
    (h_BD,) = carry
    h_new = jnp.tanh(gx_BG + dot_f32(h_BD, params["recurrent_kernel"]))
    return (h_new,), (h_new,)


def _elman_bwd(params, res, d_carry):
    (h_new,) = res
    d_pre = d_carry[0] * (1.0 - h_new**2)
    return (dot_f32(d_pre, params["recurrent_kernel"].T),), d_pre, None


FUSED = {
    "lstm": (_lstm_fwd, _lstm_bwd),
    "gru": (_gru_fwd, _gru_bwd),
    "elman": (_elman_fwd, _elman_bwd),
}


def _select(m_B, new, old):
    if m_B is None:
        return new
    return tuple(jnp.where(m_B[:, None], a, b) for a, b in zip(new, old, strict=True))


def _forward(cell, reverse, unroll, params, carry, gx_LBG, mask_LB):
    """The scan, also returning the residuals and the previous h of every step."""
    fwd = FUSED[cell][0]

    def body(carry, inputs):
        gx_BG, m_B = inputs
        new, res = fwd(params, carry, gx_BG)
        out = new[-1] if m_B is None else jnp.where(m_B[:, None], new[-1], 0.0)
        return batch_layout(_select(m_B, new, carry)), (out, res, carry[-1])

    return jax.lax.scan(body, carry, (gx_LBG, mask_LB), reverse=reverse, unroll=unroll)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def fused_scan(cell, reverse, unroll, params, carry, gx_LBG, mask_LB):
    """Same contract as ``rnn.scan_cell``: (final carry, outputs h_LBD)."""
    carry, (h_LBD, _, _) = _forward(cell, reverse, unroll, params, carry, gx_LBG, mask_LB)
    return carry, h_LBD


def _fused_fwd(cell, reverse, unroll, params, carry, gx_LBG, mask_LB):
    carry, (h_LBD, res, h_prev_LBD) = _forward(
        cell, reverse, unroll, params, carry, gx_LBG, mask_LB
    )
    return (carry, h_LBD), (params, res, h_prev_LBD, mask_LB)


def _fused_bwd(cell, reverse, unroll, saved, cotangents):
    params, res, h_prev_LBD, mask_LB = saved
    d_carry, dh_LBD = cotangents
    bwd = FUSED[cell][1]

    def body(d_carry, inputs):
        res_t, dh_BD, m_B = inputs
        d_new = d_carry[:-1] + (d_carry[-1] + dh_BD,)
        if m_B is not None:  # a frozen step passes the gradient straight through
            zeros = tuple(jnp.zeros_like(d) for d in d_carry)
            d_new = _select(m_B, d_new, zeros)
        d_prev, d_gx, d_gh = bwd(params, res_t, d_new)
        if m_B is not None:
            d_prev = tuple(
                a + jnp.where(m_B[:, None], 0.0, d) for a, d in zip(d_prev, d_carry, strict=True)
            )
        return batch_layout(d_prev), (d_gx, d_gh)

    d_carry0, (d_gx_LBG, d_gh_LBG) = jax.lax.scan(
        body, d_carry, (res, dh_LBD, mask_LB), reverse=not reverse, unroll=unroll
    )
    d_gh_LBG = d_gx_LBG if d_gh_LBG is None else d_gh_LBG
    L, B, G = d_gh_LBG.shape
    d_gh_NG = d_gh_LBG.reshape(L * B, G)
    h_prev_ND = h_prev_LBD.reshape(L * B, -1).astype(F32)
    d_params = {
        "recurrent_kernel": jnp.dot(h_prev_ND.T, d_gh_NG).astype(params["recurrent_kernel"].dtype)
    }
    if "recurrent_bias" in params:
        d_params["recurrent_bias"] = d_gh_NG.sum(axis=0).astype(params["recurrent_bias"].dtype)
    d_carry0 = tuple(d.astype(c.dtype) for d, c in zip(d_carry0, d_carry, strict=True))
    return d_params, d_carry0, d_gx_LBG.astype(F32), None


fused_scan.defvjp(_fused_fwd, _fused_bwd)
