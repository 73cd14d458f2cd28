//! `#[job]`: turns an `async fn` into a registered job handler and a typed way to enqueue it.
//!
//! ```ignore
//! #[job(name = "email.send", queue = "emails", max_attempts = 5, timeout = "10s")]
//! async fn send_email(args: Email, ctx: JobContext) -> Result<(), JobError> { ... }
//!
//! client.enqueue::<send_email>(&Email { .. }).await?;
//! ```
//!
//! The function stays as written. Beside it the macro declares a zero-sized type of the same
//! name (a braced struct lives only in the type namespace, so it does not clash with the
//! function), implements `JobType` for it and submits a `JobRegistration` to `inventory`.

#![deny(unreachable_pub)]
#![warn(missing_docs)]

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{quote, quote_spanned};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, FnArg, ItemFn, Lit, LitStr, Meta, Path, ReturnType, Token, Type};

/// Declares a job handler. See the crate docs of `queue` for the attributes:
/// `name`, `queue`, `priority`, `max_attempts`, `backoff`, `backoff_max`, `backoff_fixed`,
/// `timeout`, `unique_for`, and `crate` (path of the `queue` facade, default `::queue`).
#[proc_macro_attribute]
pub fn job(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand(attr.into(), item.into()) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

#[derive(Default)]
struct Attrs {
    name: Option<LitStr>,
    queue: Option<LitStr>,
    priority: Option<u8>,
    max_attempts: Option<u32>,
    backoff: Option<u64>,
    backoff_max: Option<u64>,
    backoff_fixed: Option<u64>,
    timeout: Option<u64>,
    unique_for: Option<u64>,
    cron: Option<LitStr>,
    cron_tz: Option<LitStr>,
    rate_limit: Option<LitStr>,
    rate_key: Option<LitStr>,
    cache_ttl: Option<u64>,
    krate: Option<Path>,
}

/// Accumulates every error instead of stopping at the first, so one compile shows them all.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }
    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

fn lit_str(e: &Expr) -> Option<LitStr> {
    match e {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Some(s.clone()),
        _ => None,
    }
}

fn lit_int<T: std::str::FromStr>(e: &Expr) -> Option<T>
where
    T::Err: std::fmt::Display,
{
    match e {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => i.base10_parse().ok(),
        _ => None,
    }
}

// The one duration grammar of the project, compiled here from the engine's own file so that a
// duration `#[job]` accepts at compile time is one the runtime accepts (and the CLI, and the
// rate-limit specs).
#[path = "../../queue-core/src/duration.rs"]
#[allow(dead_code, unreachable_pub)]
mod duration;

/// Checks "100/1m", "10/s" with the runtime's grammar.
fn valid_limit(s: &str) -> bool {
    duration::parse_rate(s).is_some()
}

/// A positive duration in milliseconds, with the runtime's grammar.
fn parse_duration(s: &str) -> Option<u64> {
    let d = duration::parse_duration(s).ok()?;
    u64::try_from(d.as_millis()).ok().filter(|ms| *ms > 0)
}

fn parse_attrs(attr: TokenStream2, errors: &mut Errors) -> Attrs {
    let mut out = Attrs::default();
    let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(attr) {
        Ok(m) => m,
        Err(e) => {
            errors.push(e);
            return out;
        }
    };
    for meta in metas {
        let Meta::NameValue(nv) = &meta else {
            errors.push(syn::Error::new(
                meta.span(),
                "expected `key = value`, e.g. `#[job(name = \"billing.send_invoice\")]`",
            ));
            continue;
        };
        let key = nv
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        let v = &nv.value;
        let dur = |errors: &mut Errors| -> Option<u64> {
            let s = lit_str(v);
            let ms = s.as_ref().and_then(|s| parse_duration(&s.value()));
            if ms.is_none() {
                errors.push(syn::Error::new(v.span(), format!("`{key}` takes a duration string such as \"500ms\", \"30s\", \"5m\", \"2h\" or \"1d\"")));
            }
            ms
        };
        match key.as_str() {
            "name" | "queue" => match lit_str(v) {
                Some(s) if !s.value().is_empty() && !s.value().contains(['{', '}', ' ']) => {
                    if key == "name" { out.name = Some(s) } else { out.queue = Some(s) }
                }
                _ => errors.push(syn::Error::new(v.span(), format!("`{key}` takes a non-empty string without spaces or braces, e.g. `{key} = \"emails\"`"))),
            },
            "priority" => match lit_int::<u8>(v) {
                Some(p) => out.priority = Some(p),
                None => errors.push(syn::Error::new(v.span(), "`priority` takes an integer from 0 to 255 (higher runs first)")),
            },
            "max_attempts" => match lit_int::<u32>(v) {
                Some(n) if n >= 1 => out.max_attempts = Some(n),
                _ => errors.push(syn::Error::new(v.span(), "`max_attempts` takes an integer of at least 1")),
            },
            "backoff" => out.backoff = dur(errors),
            "backoff_max" => out.backoff_max = dur(errors),
            "backoff_fixed" => out.backoff_fixed = dur(errors),
            "timeout" => out.timeout = dur(errors),
            "unique_for" => out.unique_for = dur(errors),
            "cache_ttl" => out.cache_ttl = dur(errors),
            "cron" | "cron_tz" => match lit_str(v) {
                Some(s) if !s.value().trim().is_empty() => {
                    if key == "cron" { out.cron = Some(s) } else { out.cron_tz = Some(s) }
                }
                _ => errors.push(syn::Error::new(v.span(), format!("`{key}` takes a string, e.g. `cron = \"0 */5 * * * *\"`, `cron_tz = \"Europe/Paris\"`"))),
            },
            "rate_limit" => match lit_str(v) {
                Some(s) if valid_limit(&s.value()) => out.rate_limit = Some(s),
                _ => errors.push(syn::Error::new(v.span(), "`rate_limit` takes \"<count>/<period>\", e.g. `rate_limit = \"100/1m\"` (periods: ms, s, m, h, d)")),
            },
            "rate_key" => match lit_str(v) {
                Some(s) if !s.value().is_empty() => out.rate_key = Some(s),
                _ => errors.push(syn::Error::new(v.span(), "`rate_key` takes a non-empty string, e.g. `rate_key = \"smtp\"`")),
            },
            "crate" => match lit_str(v).map(|s| s.parse::<Path>()) {
                Some(Ok(p)) => out.krate = Some(p),
                _ => errors.push(syn::Error::new(v.span(), "`crate` takes a path string, e.g. `crate = \"::queue\"`")),
            },
            _ => errors.push(syn::Error::new(
                nv.path.span(),
                format!("unknown attribute `{key}`; expected one of: name, queue, priority, max_attempts, backoff, backoff_max, backoff_fixed, timeout, unique_for, cron, cron_tz, rate_limit, rate_key, cache_ttl, crate"),
            )),
        }
    }
    if let (Some(key), None) = (&out.rate_key, &out.rate_limit) {
        errors.push(syn::Error::new(
            key.span(),
            "`rate_key` needs `rate_limit`: add `rate_limit = \"100/1m\"`",
        ));
    }
    if let (Some(tz), None) = (&out.cron_tz, &out.cron) {
        errors.push(syn::Error::new(
            tz.span(),
            "`cron_tz` needs `cron`: add `cron = \"...\"`",
        ));
    }
    if out.backoff_fixed.is_some() && (out.backoff.is_some() || out.backoff_max.is_some()) {
        errors.push(syn::Error::new(
            Span::call_site(),
            "`backoff_fixed` cannot be combined with `backoff`/`backoff_max`: choose one policy",
        ));
    }
    out
}

fn expand(attr: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let mut errors = Errors::default();
    let attrs = parse_attrs(attr, &mut errors);
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            errors.push(syn::Error::new_spanned(item, "#[job] goes on an `async fn`, e.g. `#[job] async fn send_email(args: Email) -> Result<(), JobError> { .. }`"));
            return errors.finish().map(|()| TokenStream2::new());
        }
    };
    let sig = &func.sig;
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new(
            sig.fn_token.span(),
            "#[job] needs an `async fn`: write `async fn` here",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(syn::Error::new(sig.generics.span(), "#[job] functions cannot be generic: use a concrete argument type (one job name must decode to one type)"));
    }
    let mut typed = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => errors.push(syn::Error::new(
                r.span(),
                "#[job] functions cannot take `self`: make it a free function",
            )),
            FnArg::Typed(t) => typed.push(t.clone()),
        }
    }
    if typed.is_empty() || typed.len() > 2 {
        errors.push(syn::Error::new(
            sig.inputs.span().join(sig.ident.span()).unwrap_or_else(|| sig.ident.span()),
            "#[job] functions take the job's arguments and optionally a `JobContext`: `async fn f(args: MyArgs)` or `async fn f(args: MyArgs, ctx: JobContext)`",
        ));
    }
    if let Some(t) = typed.first() {
        if let Type::Reference(r) = &*t.ty {
            errors.push(syn::Error::new(
                r.span(),
                "job arguments are decoded into an owned value: take `MyArgs`, not a reference",
            ));
        }
    }
    match &sig.output {
        ReturnType::Default => errors.push(syn::Error::new(
            sig.paren_token.span.close(),
            "#[job] functions must return a `Result`: add `-> Result<(), JobError>` (any `E: Into<JobError>` works, including boxed errors)",
        )),
        ReturnType::Type(_, ty) => {
            let is_result = matches!(&**ty, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident.to_string().ends_with("Result")));
            if !is_result {
                errors.push(syn::Error::new(ty.span(), "#[job] functions must return a `Result<T, E>` where `T: Serialize` and `E: Into<JobError>`, e.g. `Result<(), JobError>`"));
            }
        }
    }
    errors.finish()?;

    let krate = attrs
        .krate
        .clone()
        .unwrap_or_else(|| syn::parse_quote!(::queue));
    let p = quote!(#krate::__private);
    let vis = &func.vis;
    let ident = &sig.ident;
    let name = attrs
        .name
        .clone()
        .unwrap_or_else(|| LitStr::new(&ident.to_string(), ident.span()));
    let args_ty = &typed[0].ty;
    let call = if typed.len() == 2 {
        quote!(#ident(args, ctx))
    } else {
        quote!({ let _ = ctx; #ident(args) })
    };

    let opt = |v: Option<TokenStream2>| {
        v.map_or(
            quote!(::core::option::Option::None),
            |t| quote!(::core::option::Option::Some(#t)),
        )
    };
    let queue = opt(attrs
        .queue
        .as_ref()
        .map(|q| quote!(::std::string::String::from(#q))));
    let priority = opt(attrs.priority.map(|v| quote!(#v)));
    let max_attempts = opt(attrs.max_attempts.map(|v| quote!(#v)));
    let ms = |v: u64| quote!(::core::time::Duration::from_millis(#v));
    let backoff = match (attrs.backoff_fixed, attrs.backoff, attrs.backoff_max) {
        (Some(f), _, _) => {
            let d = ms(f);
            opt(Some(quote!(#p::Backoff::fixed(#d))))
        }
        (None, None, None) => opt(None),
        (None, b, m) => {
            let b = ms(b.unwrap_or(1_000));
            let m = ms(m.unwrap_or(3_600_000));
            opt(Some(quote!(#p::Backoff::exponential(#b, #m))))
        }
    };
    let timeout = opt(attrs.timeout.map(ms));
    let unique_for = opt(attrs.unique_for.map(ms));
    // A scheduled job runs with its arguments' `Default` value; the expression and zone are
    // checked when the worker starts (an invalid one is a start-up error naming the job).
    let schedule = match &attrs.cron {
        Some(expr) => {
            let tz = attrs
                .cron_tz
                .clone()
                .unwrap_or_else(|| LitStr::new("UTC", Span::call_site()));
            quote!(::core::option::Option::Some(|| {
                #p::Schedule::of::<#ident>(#name, #expr, &<#args_ty as ::core::default::Default>::default())?.tz(#tz)
            }))
        }
        None => quote!(::core::option::Option::None),
    };
    let rate_limit = match &attrs.rate_limit {
        Some(limit) => {
            let key = attrs.rate_key.clone().unwrap_or_else(|| name.clone());
            quote!(::core::option::Option::Some((#limit, #key)))
        }
        None => quote!(::core::option::Option::None),
    };
    let cache_ttl = opt(attrs.cache_ttl.map(|v| quote!(#v)));
    let doc = format!("The `{}` job (see [`{ident}()`](fn@{ident})): enqueue it with `client.enqueue::<{ident}>(&args)`.", name.value());

    Ok(quote_spanned! {Span::call_site()=>
        #func

        #[allow(non_camel_case_types)]
        #[doc = #doc]
        #[derive(Debug, Clone, Copy, Default)]
        #vis struct #ident {}

        const _: () = {
            impl #p::JobType for #ident {
                const NAME: &'static str = #name;
                type Args = #args_ty;
                fn options() -> #p::JobOptions {
                    #p::JobOptions {
                        queue: #queue,
                        priority: #priority,
                        max_attempts: #max_attempts,
                        backoff: #backoff,
                        timeout: #timeout,
                        unique_for: #unique_for,
                        ..::core::default::Default::default()
                    }
                }
            }

            fn __queue_handler(ctx: #p::JobContext, payload: ::std::vec::Vec<u8>) -> #p::HandlerFuture {
                ::std::boxed::Box::pin(async move {
                    let args: #args_ty = #p::decode_args(&payload, #name)?;
                    let out = #call.await.map_err(::core::convert::Into::<#p::JobError>::into)?;
                    #p::encode_result(&out)
                })
            }

            #p::inventory::submit! {
                #p::JobRegistration {
                    name: #name,
                    handler: __queue_handler,
                    options: <#ident as #p::JobType>::options,
                    location: ::core::concat!(::core::file!(), ":", ::core::line!()),
                    schedule: #schedule,
                    rate_limit: #rate_limit,
                    cache_ttl_ms: #cache_ttl,
                }
            }
        };
    })
}
