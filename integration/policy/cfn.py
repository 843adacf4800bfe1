"""Resolve template.yaml to concrete JSON for one parameter set.

A small resolver for the intrinsic functions the template uses (Ref, Fn::Sub, Fn::Join,
Fn::If, Fn::Select, Fn::Split, Fn::GetAtt, conditions and Rules). It is the *renderer*: what it
produces is checked by parliament and evaluated by principalmapper, and the template itself is
checked by cfn-lint, `sam validate --lint` and checkov. The YAML is parsed with cfn-lint's
decoder (short tags such as !Sub become {"Fn::Sub": ...}).

Physical names that CloudFormation would invent (the role name) get fixed example values;
everything the policies depend on (function name, log group name, ARNs) is derived the way
CloudFormation derives it.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACCOUNT = "123456789012"
REGION = "us-east-1"
PARTITION = "aws"
STACK = "pgrotate"


class NoValue:
    """AWS::NoValue: removes the enclosing key or list item."""

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return "AWS::NoValue"


NO_VALUE = NoValue()


class TemplateError(Exception):
    pass


@dataclass(frozen=True)
class Stack:
    """Where the stack is deployed: the pseudo parameters' values (the proof's defaults; the
    Rust renderer's equality check also renders other partitions and regions)."""

    partition: str = PARTITION
    region: str = REGION
    account: str = ACCOUNT
    name: str = STACK

    @property
    def url_suffix(self) -> str:
        return "amazonaws.com.cn" if self.partition == "aws-cn" else "amazonaws.com"


def load_template(path: str | Path) -> dict:
    from cfnlint.decode import decode

    template, matches = decode(str(path))
    if template is None or matches:
        raise TemplateError(f"cannot parse {path}: {[str(m) for m in matches]}")
    # cfn-lint returns str/dict subclasses that carry line numbers; plain JSON types are enough.
    return json.loads(json.dumps(template))


def _split_list(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [v.strip() for v in str(value).split(",")]


class Resolver:
    def __init__(self, template: dict, parameters: dict[str, Any], stack: Stack | None = None):
        self.template = template
        self.stack = stack or Stack()
        self.params = self._bind_parameters(parameters)
        self._conditions: dict[str, bool] = {}

    # -- parameters ---------------------------------------------------------------------
    def _bind_parameters(self, given: dict[str, Any]) -> dict[str, Any]:
        declared = self.template.get("Parameters", {})
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise TemplateError(f"unknown parameters: {unknown}")
        bound: dict[str, Any] = {}
        for name, decl in declared.items():
            if name in given:
                raw = given[name]
            elif "Default" in decl:
                raw = decl["Default"]
            else:
                raise TemplateError(f"parameter {name} has no default and was not given")
            ptype = decl.get("Type", "String")
            if ptype == "CommaDelimitedList" or ptype.startswith("List<"):
                value: Any = _split_list(raw)
                items = value
            else:
                value = str(raw) if not isinstance(raw, bool) else str(raw).lower()
                items = [value]
            for item in items:
                allowed = decl.get("AllowedValues")
                if allowed is not None and item not in [str(a) for a in allowed]:
                    raise TemplateError(f"parameter {name}: {item!r} not in {allowed}")
                pattern = decl.get("AllowedPattern")
                if pattern is not None and not re.fullmatch(pattern, item):
                    raise TemplateError(f"parameter {name}: {item!r} does not match {pattern}")
                if ptype == "Number":
                    number = float(item)
                    if "MinValue" in decl and number < float(decl["MinValue"]):
                        raise TemplateError(f"parameter {name}: {item} < {decl['MinValue']}")
                    if "MaxValue" in decl and number > float(decl["MaxValue"]):
                        raise TemplateError(f"parameter {name}: {item} > {decl['MaxValue']}")
            bound[name] = value
        return bound

    # -- references ---------------------------------------------------------------------
    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::Region": self.stack.region,
            "AWS::AccountId": self.stack.account,
            "AWS::Partition": self.stack.partition,
            "AWS::StackName": self.stack.name,
            "AWS::URLSuffix": self.stack.url_suffix,
            "AWS::NoValue": NO_VALUE,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.params:
            return self.params[name]
        resources = self.template.get("Resources", {})
        if name in resources:
            return self._physical(name)["Ref"]
        raise TemplateError(f"Ref to unknown name {name}")

    def get_att(self, logical: str, attribute: str) -> Any:
        attrs = self._physical(logical)
        if attribute not in attrs:
            raise TemplateError(f"GetAtt {logical}.{attribute} is not modelled")
        return attrs[attribute]

    def _physical(self, logical: str) -> dict[str, str]:
        resource = self.template["Resources"][logical]
        rtype = resource["Type"]
        props = resource.get("Properties", {})
        partition, region, account = self.stack.partition, self.stack.region, self.stack.account
        if rtype in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            name = self.resolve(props["FunctionName"])
            arn = f"arn:{partition}:lambda:{region}:{account}:function:{name}"
            return {"Ref": name, "Arn": arn}
        if rtype == "AWS::IAM::Role":
            name = f"{self.stack.name}-{logical}-EXAMPLE0000"
            return {"Ref": name, "Arn": f"arn:{partition}:iam::{account}:role/{name}"}
        if rtype == "AWS::Logs::LogGroup":
            name = self.resolve(props["LogGroupName"])
            return {"Ref": name, "Arn": f"arn:{partition}:logs:{region}:{account}:log-group:{name}:*"}
        if rtype == "AWS::Events::Rule":
            name = self.resolve(props["Name"])
            return {"Ref": name, "Arn": f"arn:{partition}:events:{region}:{account}:rule/{name}"}
        if rtype == "AWS::CloudWatch::Alarm":
            name = self.resolve(props["AlarmName"])
            return {"Ref": name, "Arn": f"arn:{partition}:cloudwatch:{region}:{account}:alarm:{name}"}
        return {"Ref": f"{self.stack.name}-{logical}-EXAMPLE0000"}

    # -- conditions ---------------------------------------------------------------------
    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            expr = self.template.get("Conditions", {}).get(name)
            if expr is None:
                raise TemplateError(f"unknown condition {name}")
            self._conditions[name] = bool(self.resolve(expr))
        return self._conditions[name]

    # -- the resolver -------------------------------------------------------------------
    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            out = [self.resolve(item) for item in node]
            return [item for item in out if item is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            fn = self._functions().get(key)
            if fn is not None:
                return fn(arg)
        out = {}
        for key, value in node.items():
            resolved = self.resolve(value)
            if resolved is not NO_VALUE:
                out[key] = resolved
        return out

    def _functions(self):
        return {
            "Ref": lambda a: self.ref(a),
            "Fn::GetAtt": self._fn_get_att,
            "Fn::Sub": self._fn_sub,
            "Fn::Join": lambda a: str(a[0]).join(str(x) for x in self._as_list(self.resolve(a[1]))),
            "Fn::Select": lambda a: self._as_list(self.resolve(a[1]))[int(self.resolve(a[0]))],
            "Fn::Split": lambda a: self.resolve(a[1]).split(a[0]),
            "Fn::If": self._fn_if,
            "Fn::Equals": lambda a: self._scalar(self.resolve(a[0])) == self._scalar(self.resolve(a[1])),
            "Fn::Not": lambda a: not self.resolve(a[0]),
            "Fn::And": lambda a: all(self.resolve(x) for x in a),
            "Fn::Or": lambda a: any(self.resolve(x) for x in a),
            "Condition": lambda a: self.condition(a),
            # Rule functions.
            "Fn::Contains": lambda a: self.resolve(a[1]) in self._as_list(self.resolve(a[0])),
            "Fn::EachMemberEquals": lambda a: all(
                x == self.resolve(a[1]) for x in self._as_list(self.resolve(a[0]))
            ),
            "Fn::EachMemberIn": lambda a: all(
                x in self._as_list(self.resolve(a[1])) for x in self._as_list(self.resolve(a[0]))
            ),
        }

    @staticmethod
    def _as_list(value: Any) -> list:
        return value if isinstance(value, list) else [value]

    @staticmethod
    def _scalar(value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    def _fn_get_att(self, arg: Any) -> Any:
        if isinstance(arg, str):
            logical, attribute = arg.split(".", 1)
        else:
            logical, attribute = arg[0], self.resolve(arg[1])
        return self.get_att(logical, attribute)

    def _fn_if(self, arg: list) -> Any:
        name, then, otherwise = arg
        return self.resolve(then if self.condition(name) else otherwise)

    def _fn_sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, variables = arg[0], {k: self.resolve(v) for k, v in arg[1].items()}
        else:
            text, variables = arg, {}

        def replace(match: re.Match) -> str:
            expr = match.group(1)
            if expr.startswith("!"):
                return "${" + expr[1:] + "}"
            if expr in variables:
                value = variables[expr]
            elif "." in expr and not expr.startswith("AWS::"):
                logical, attribute = expr.split(".", 1)
                value = self.get_att(logical, attribute)
            else:
                value = self.ref(expr)
            if isinstance(value, list):
                raise TemplateError(f"Fn::Sub variable {expr} is a list")
            return str(value)

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    # -- whole-template views -----------------------------------------------------------
    def check_rules(self) -> list[str]:
        """The Rules assertions that fail for this parameter set (CloudFormation would refuse
        to create the stack)."""
        failures = []
        for name, rule in self.template.get("Rules", {}).items():
            if "RuleCondition" in rule and not self.resolve(rule["RuleCondition"]):
                continue
            for assertion in rule.get("Assertions", []):
                if not self.resolve(assertion["Assert"]):
                    failures.append(f"{name}: {assertion.get('AssertDescription', '')}")
        return failures

    def resolved_template(self) -> dict:
        """The template with parameters, conditions and intrinsic functions applied, as
        CloudFormation would see it for this parameter set (resources whose condition is
        false are gone)."""
        out: dict[str, Any] = {}
        for key in ("AWSTemplateFormatVersion", "Transform", "Description"):
            if key in self.template:
                out[key] = self.template[key]
        resources = {}
        for logical, resource in self.template.get("Resources", {}).items():
            if "Condition" in resource and not self.condition(resource["Condition"]):
                continue
            resolved = {k: v for k, v in resource.items() if k != "Condition"}
            if "Properties" in resolved:
                resolved["Properties"] = self.resolve(copy.deepcopy(resolved["Properties"]))
            resources[logical] = resolved
        out["Resources"] = resources
        outputs = {}
        for name, output in self.template.get("Outputs", {}).items():
            if "Condition" in output and not self.condition(output["Condition"]):
                continue
            outputs[name] = {k: self.resolve(v) for k, v in output.items() if k != "Condition"}
        out["Outputs"] = outputs
        return out


def render(template: dict, parameters: dict[str, Any], stack: Stack | None = None) -> dict[str, Any]:
    """Everything the proof needs for one parameter set."""
    resolver = Resolver(template, parameters, stack)
    failures = resolver.check_rules()
    if failures:
        raise TemplateError("the template's Rules refuse this parameter set: " + "; ".join(failures))
    resolved = resolver.resolved_template()
    resources = resolved["Resources"]

    roles = [(k, r) for k, r in resources.items() if r["Type"] == "AWS::IAM::Role"]
    if len(roles) != 1:
        raise TemplateError(f"expected one AWS::IAM::Role, found {len(roles)}")
    role_logical, role = roles[0][0], roles[0][1]["Properties"]
    policies = role.get("Policies", [])
    if len(policies) != 1:
        raise TemplateError(f"expected one inline policy, found {len(policies)}")
    if role.get("ManagedPolicyArns"):
        raise TemplateError("the role must not attach managed policies")

    functions = [r for r in resources.values() if r["Type"] == "AWS::Serverless::Function"]
    if len(functions) != 1:
        raise TemplateError(f"expected one function, found {len(functions)}")
    function = functions[0]["Properties"]
    for forbidden in ("Policies", "Events"):
        if forbidden in function:
            raise TemplateError(f"the function must not use SAM {forbidden} (they add permissions)")
    st = resolver.stack
    function_arn = f"arn:{st.partition}:lambda:{st.region}:{st.account}:function:{function['FunctionName']}"

    permission_statements = []
    for logical, res in resources.items():
        if res["Type"] != "AWS::Lambda::Permission":
            continue
        p = res["Properties"]
        statement: dict[str, Any] = {
            "Sid": logical,
            "Effect": "Allow",
            "Principal": {"Service": p["Principal"]},
            "Action": p["Action"],
            "Resource": p["FunctionName"],
        }
        condition: dict[str, Any] = {}
        if "SourceAccount" in p:
            condition.setdefault("StringEquals", {})["aws:SourceAccount"] = p["SourceAccount"]
        if "SourceArn" in p:
            condition.setdefault("ArnLike", {})["aws:SourceArn"] = p["SourceArn"]
        if condition:
            statement["Condition"] = condition
        permission_statements.append(statement)

    outputs = resolved["Outputs"]
    key_policies = {}
    for name in ("KmsKeyPolicyStatement", "MasterKmsKeyPolicyStatement"):
        if name in outputs:
            statement = json.loads(outputs[name]["Value"])
            key_policies[name] = {"Version": "2012-10-17", "Statement": [statement]}

    return {
        "parameters": resolver.params,
        "role_arn": resolver.get_att(role_logical, "Arn"),
        "function_arn": function_arn,
        "function": function,
        "role_policy": policies[0]["PolicyDocument"],
        "trust_policy": role["AssumeRolePolicyDocument"],
        "permissions_boundary": role.get("PermissionsBoundary"),
        "lambda_resource_policy": {"Version": "2012-10-17", "Id": "default", "Statement": permission_statements},
        "key_policies": key_policies,
        "outputs": outputs,
        "template": resolved,
    }


EXPECTED_TRANSFORMED = {
    "Function": "AWS::Lambda::Function",
    "Role": "AWS::IAM::Role",
    "LogGroup": "AWS::Logs::LogGroup",
    "InvokePermission": "AWS::Lambda::Permission",
    "RotationSchedule": "AWS::SecretsManager::RotationSchedule",
    "RotationFailedAlarm": "AWS::CloudWatch::Alarm",
    "RotationFailedRule": "AWS::Events::Rule",
}


def check_sam_transform(template: dict) -> None:
    """Run SAM's own translator (offline) and check that it adds nothing to what the template
    declares: no generated role, no policy, no extra resource."""
    import os

    from samtranslator.translator.transform import transform

    class NoManagedPolicies:
        def load(self) -> dict:
            return {}

    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    doc = copy.deepcopy(template)
    # The translator wants an S3 location where `sam build` would have put the code.
    doc["Resources"]["Function"]["Properties"]["CodeUri"] = "s3://bucket/key"
    params = {"SecretArns": f"arn:{PARTITION}:secretsmanager:{REGION}:{ACCOUNT}:secret:example-??????"}
    out = transform(doc, params, NoManagedPolicies())
    types = {k: v["Type"] for k, v in out["Resources"].items()}
    if types != EXPECTED_TRANSFORMED:
        raise TemplateError(f"SAM's transform produced {types}, expected {EXPECTED_TRANSFORMED}")
    function = out["Resources"]["Function"]["Properties"]
    if function.get("Role") != {"Fn::GetAtt": ["Role", "Arn"]}:
        raise TemplateError(f"the transformed function's role is {function.get('Role')}, not the template's Role")
    role = out["Resources"]["Role"]["Properties"]
    if role.get("ManagedPolicyArns") or len(role.get("Policies", [])) != 1:
        raise TemplateError("SAM's transform changed the role's policies")
